/**
 * Flags that take one value. yargs makes a flag given twice an array of its values (`--size 64M
 * --size 128M`, which reached the size parser as if it were one text), and a number flag that is
 * no number NaN. A flag with a `coerce` (sizes, whole numbers, names) reads its value with
 * flagOnce, which runs before any check; every other flag but --disk and --nic is refused when
 * repeated by refuseRepeatedFlags, the CLI's global check. Either way the message names the flag.
 */
import { AcpError } from '../runtime/errors.js';
import { givenText } from './output.js';

function usage(message: string): AcpError {
  return new AcpError('ACP_ERR_CLI_USAGE', message);
}

/** `--flag`'s value, refused when the flag was given more than once. */
export function onlyOnce(flag: string, value: unknown): unknown {
  if (Array.isArray(value)) throw usage(`--${flag} given ${value.length === 2 ? 'twice' : `${value.length} times`}; give it once`);
  return value;
}

/** Flags that are given once per item: each one more disk or NIC of a system. */
const REPEATABLE = new Set(['disk', 'nic']);

/**
 * Every other flag given twice is refused, naming it: yargs would hand its handler an array where
 * it reads one text (`--kernel a --kernel b` ended as a schema error about an array). The keys
 * yargs adds in camelCase beside the kebab-case ones are skipped, so each flag is named once.
 */
export function refuseRepeatedFlags(argv: Record<string, unknown>): void {
  for (const [key, value] of Object.entries(argv)) {
    if (key === '_' || key === '$0' || REPEATABLE.has(key) || /[A-Z]/.test(key)) continue;
    onlyOnce(key, value);
  }
}

/**
 * A switch given a value other than true or false (`--stop-systems=maybe`): yargs reads it as
 * false, and the command would run as if it were left out. Refused, naming it.
 */
export function refuseSwitchValues(argv: Record<string, unknown>, args: readonly string[] = process.argv.slice(2)): void {
  for (const arg of args) {
    if (arg === '--') break;
    const match = /^--([a-z][a-z0-9-]*)=(.*)$/s.exec(arg);
    if (!match || typeof argv[match[1]!] !== 'boolean' || /^(true|false)$/.test(match[2]!)) continue;
    throw usage(`--${match[1]} is a switch: give it alone (or =true, =false), not '${match[2]!.slice(0, 40)}'`);
  }
}

/**
 * A yargs `coerce` for `--flag`: its one value, read by `read` (which names the flag in its errors).
 * A value starting with '-' that is no plain number (`--size -1M`) yargs reads as flags, leaving
 * the flag none: that is said first, as usageMessage says it when only the unknown flags are left.
 */
export function flagOnce<T>(flag: string, read: (value: unknown, flag: string) => T, args: readonly string[] = process.argv): (value: unknown) => T {
  return (value) => {
    const once = onlyOnce(flag, value);
    const next = args[args.indexOf(`--${flag}`) + 1];
    if ((once === undefined || once === '') && args.includes(`--${flag}`) && next !== undefined && /^-[\d.]/.test(next)) {
      throw usage(`${next} after --${flag} was read as flags, not as its value: write --${flag}=${next} to give it as the value`);
    }
    return read(once, flag);
  };
}

const UNITS: Record<string, number> = { '': 1, B: 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

const MAX_SIZE_TEXT = `${Math.floor(Number.MAX_SAFE_INTEGER / 1024 ** 4)}T`;

/** `64M`, `8G`, `1.5T`, `4096` (bytes): binary units. */
export function parseSize(text: string, what = '--size'): number {
  const match = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(text.trim());
  if (!match) throw usage(`${what} ${text}: give a size like 64M, 8G or 1T (binary units) or a number of bytes`);
  const bytes = Math.round(Number(match[1]) * UNITS[match[2]!.toUpperCase()]!);
  if (bytes < 1) throw usage(`${what} ${text}: must be at least 1 byte`);
  if (!Number.isSafeInteger(bytes)) throw usage(`${what} ${text}: too large; the most is ${MAX_SIZE_TEXT}`);
  return bytes;
}

/** A size flag's reader for flagOnce: `coerce: flagOnce('size', sizeValue)`. */
export function sizeValue(value: unknown, flag: string): number {
  return parseSize(value === undefined ? '' : String(value), `--${flag}`);
}

export interface WholeNumberRule {
  min?: number;
  max?: number;
  /** What it counts, for the error: `milliseconds`. */
  unit?: string;
  /** The whole rule, for the error, instead of one made of the others: `a port number (0-65535)`. */
  what?: string;
  /** Said after the error: `nothing was stopped`. */
  note?: string;
}

/**
 * A whole-number flag's reader for flagOnce. yargs gives a number flag's value as a number, NaN
 * when it is none (the text is then found in `args`), undefined when there is none. Without
 * bounds, the schema the value goes to checks them.
 */
export function wholeNumber(rule: WholeNumberRule = {}, args: readonly string[] = process.argv): (value: unknown, flag: string) => number {
  return (value, flag) => {
    const { min, max } = rule;
    if (typeof value === 'number' && Number.isInteger(value) && (min === undefined || value >= min) && (max === undefined || value <= max)) return value;
    const bounds = min !== undefined && max !== undefined ? ` from ${min} to ${max}` : min !== undefined ? ` of at least ${min}` : max !== undefined ? ` of at most ${max}` : '';
    const what = rule.what ?? `a whole number${rule.unit === undefined ? '' : ` of ${rule.unit}`}${bounds}`;
    const typed = typeof value === 'number' ? givenText(value, flag, args) : undefined;
    const given = value === undefined || value === '' ? 'nothing' : typed === 'a number' ? 'a text that is no number' : (typed ?? JSON.stringify(String(value)));
    throw usage(`--${flag} must be ${what}, not ${given}${rule.note === undefined ? '' : `; ${rule.note}`}`);
  };
}
