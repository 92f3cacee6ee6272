import { AcpError, isErrorCode } from '../runtime/errors.js';
import type { NodeStatus } from '../runtime/services.js';
import type { SyncStatus } from '../actors/cdb/sync-node.js';
import { total, type SyncTraffic } from '../actors/cdb/sync-traffic.js';

/** Exit codes: 0 ok, 1 an error from the node (or reaching it), 2 a usage error. */
export const EXIT_OK = 0;
export const EXIT_NODE_ERROR = 1;
export const EXIT_USAGE = 2;

const USAGE_CODES = new Set(['ACP_ERR_CLI_USAGE', 'ACP_ERR_CLI_BAD_JSON', 'ACP_ERR_PATH_INVALID', 'ACP_ERR_NAME_INVALID', 'ACP_ERR_CHAOS_SCENARIO']);

export function exitCodeFor(error: AcpError): number {
  return USAGE_CODES.has(error.code) ? EXIT_USAGE : EXIT_NODE_ERROR;
}

/** One clear line on standard error (or a JSON object with --json), never a stack trace. */
export function printError(error: unknown, json: boolean): number {
  const acpError = error instanceof AcpError ? error : AcpError.from(error);
  if (json) {
    process.stdout.write(`${JSON.stringify({ error: acpError.toData() })}\n`);
  } else {
    process.stderr.write(`acp: ${acpError.message.replace(/\s*\n\s*/g, ' ')} (${isErrorCode(acpError.code) ? acpError.code : 'ACP_ERR_INTERNAL'})\n`);
  }
  return exitCodeFor(acpError);
}

/** acp's global flags that take a value (cli/acp.ts), skipped to find the command's words. */
const GLOBAL_VALUE_FLAGS = new Set(['--home', '--log-level', '--token']);

/**
 * A yargs usage message as one line, made to name what the user typed: an unknown flag listed
 * once (yargs adds its camelCase twin); a value starting with '-' that yargs read as flags
 * (`--size -1M`); the command that is missing an argument. `args`: what followed `acp`.
 */
export function usageMessage(text: string, args: readonly string[] = process.argv.slice(2)): string {
  const oneLine = text.replace(/\s*\n\s*/g, ' ').trim();
  const missing = /^Not enough non-option arguments: got (\d+), need at least (\d+)$/.exec(oneLine);
  if (missing) {
    const [given, needed] = [Number(missing[1]), Number(missing[2])];
    // The command's words: after the global flags (and their values), up to its own flags, less the
    // arguments given. With words after its flags (arguments, or flags' values) that is not known.
    const words: string[] = [];
    let index = 0;
    for (; index < args.length; index += 1) {
      const arg = args[index]!;
      if (!arg.startsWith('-')) words.push(arg);
      else if (words.length > 0) break;
      else if (GLOBAL_VALUE_FLAGS.has(arg)) index += 1;
    }
    const known = args.slice(index).every((arg) => arg.startsWith('-'));
    const commandWords = words.slice(0, words.length - given);
    const counted = `${needed} argument${needed === 1 ? '' : 's'} needed, ${given} given`;
    if (!known || commandWords.length === 0 || !commandWords.every((word) => /^[a-z][a-z-]*$/.test(word))) return `a command is missing arguments (${counted}); its --help names them`;
    const command = ['acp', ...commandWords].join(' ');
    return `${command}: ${counted}; '${command} --help' names ${needed === 1 ? 'it' : 'them'}`;
  }
  const unknown = /^Unknown arguments?: (.*)$/.exec(oneLine);
  if (!unknown) return oneLine;
  const names = unknown[1]!.split(', ');
  // A plain negative number is a value to yargs; `-1M` is flags 1 and M, which are then unknown.
  const readAsFlags = (value: string) => /^-[\d.]/.test(value) && !/^-\d+(\.\d+)?$/.test(value) && names.every((name) => value.slice(1).includes(name));
  const flagged = args.findIndex((arg, index) => /^--[a-z][\w-]*$/.test(arg) && readAsFlags(args[index + 1] ?? ''));
  if (flagged >= 0) return `${args[flagged + 1]} after ${args[flagged]} was read as flags, not as its value: write ${args[flagged]}=${args[flagged + 1]} to give it as the value`;
  const kept = names.filter((name) => !(/[A-Z]/.test(name) && names.includes(name.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`))));
  return `${kept.length === 1 ? 'Unknown argument' : 'Unknown arguments'}: ${kept.join(', ')}`;
}

/** What the user typed for a numeric flag, for an error: yargs turns `--timeout abc` into NaN. */
export function givenText(value: number, flag: string, args: readonly string[] = process.argv): string {
  if (!Number.isNaN(value)) return String(value);
  for (let index = 0; index < args.length; index += 1) {
    const arg = args[index]!;
    if (arg === `--${flag}` && index + 1 < args.length) return JSON.stringify(args[index + 1]);
    if (arg.startsWith(`--${flag}=`)) return JSON.stringify(arg.slice(flag.length + 3));
  }
  return 'a number';
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

export function table(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  return rows.map((row) => row.map((cell, column) => cell.padEnd(widths[column]!)).join('  ').trimEnd()).join('\n');
}

export function formatDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m${seconds % 60}s`;
  const hours = Math.floor(minutes / 60);
  return hours < 48 ? `${hours}h${minutes % 60}m` : `${Math.floor(hours / 24)}d${hours % 24}h`;
}

/** What `acp status` says about sync (the CDB's `cdb.sync.status`), or null on a node in no cluster. */
export type SyncSummary = Pick<SyncStatus, 'mode' | 'multicast' | 'fallbackReason' | 'peers' | 'gateways' | 'synced'> & { traffic?: SyncTraffic };

/** Sync traffic since the daemon started, one line: payloads and bytes each way, and what repairs and snapshots moved. */
export function syncTrafficLine(traffic: SyncTraffic): string {
  const size = (bytes: number) => (bytes >= 1024 * 1024 ? `${(bytes / 1024 / 1024).toFixed(1)} MiB` : `${(bytes / 1024).toFixed(1)} KiB`);
  const flows = (channel: 'multicast' | 'unicast') => {
    const sent = total(traffic[channel].sent);
    const received = total(traffic[channel].received);
    return `${channel} sent ${sent.count} (${size(sent.bytes)}), received ${received.count} (${size(received.bytes)})`;
  };
  const exchange = (what: 'repair' | 'snapshot') => `${what} in ${size(traffic[what].received.bytes)}, out ${size(traffic[what].served.bytes)}`;
  return `${flows('multicast')}; ${flows('unicast')}; ${exchange('repair')}; ${exchange('snapshot')}`;
}

function syncLine(sync: SyncSummary | null): string {
  if (!sync) return 'off (this node belongs to no cluster)';
  const where = sync.mode === 'multicast' && sync.multicast ? `multicast ${sync.multicast.group}:${sync.multicast.port} on ${sync.multicast.interface}` : `unicast over the agent to ${sync.peers.length} peer(s)`;
  const fallback = sync.fallbackReason ? ` (multicast unavailable: ${sync.fallbackReason})` : '';
  const gateways = sync.gateways.length > 0 ? `; gateway to ${sync.gateways.map((gateway) => gateway.node ?? gateway.address).join(', ')}` : '';
  return `${where}${fallback}${gateways}; ${sync.synced ? 'synced' : 'catching up'}`;
}

export function formatStatus(status: NodeStatus, sync: SyncSummary | null = null): string {
  const header = [
    `cluster      ${status.cluster}`,
    `node         ${status.node}`,
    `incarnation  ${status.incarnation}`,
    `pid          ${status.pid}`,
    `uptime       ${formatDuration(status.uptimeMs)}`,
    `dead letters ${status.deadLetters}`,
    `refused      ${status.refusedConnections} connection(s), ${status.forbidden ?? 0} message(s) from senders not allowed to send them`,
    `faults       ${status.faults ? 'enabled (--faults)' : 'disabled'}`,
    `socket       ${status.socket}`,
    `sync         ${syncLine(sync)}`,
    ...(sync?.traffic ? [`sync traffic ${syncTrafficLine(sync.traffic)}`] : []),
  ];
  const rows = [
    ['SERVICE', 'STATE', 'RESTARTS', 'ISOLATION', 'PID', 'PATH'],
    ...status.services.map((service) => [
      service.name,
      service.state,
      String(service.restarts),
      service.isolation + (service.threadId ? ` (thread ${service.threadId})` : ''),
      service.pid === undefined ? '-' : String(service.pid),
      service.path,
    ]),
  ];
  const failed = status.services.filter((service) => service.lastError && service.state !== 'running');
  const errors = failed.map((service) => `${service.name}: ${service.lastError}`);
  return [...header, '', table(rows), ...(errors.length > 0 ? ['', ...errors] : [])].join('\n');
}
