import { AcpError } from '../runtime/errors.js';

/** `1h`, `30m`, `90s`, `2d` or plain milliseconds. */
export function parseDuration(text: string): number {
  const match = /^(\d+)(ms|s|m|h|d)?$/.exec(text.trim());
  if (!match) throw new AcpError('ACP_ERR_CLI_USAGE', `'${text}' is not a duration: use a number with ms, s, m, h or d (for example 1h)`);
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
  return Number(match[1]) * units[match[2] ?? 'ms']!;
}
