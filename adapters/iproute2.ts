/**
 * Every iproute2 call ACP makes: `ip -j` and `bridge -j`, run with execFile (never a shell) and a
 * timeout, by the exec helper (adapters/exec.ts); JSON output parsed and checked. A missing binary, a refused
 * operation, a timeout or output that does not parse is an AcpError naming the command.
 */
import { z } from 'zod';
import { execProgram } from './exec.js';
import { IFNAME_PATTERN, provisionalName } from './interface-names.js';
import { AcpError } from '../runtime/errors.js';

/** One interface as `ip -j -d link` shows it (parsed into this here). */
export interface ObservedLink {
  readonly name: string;
  /** `linkinfo.info_kind`: bridge, vlan, tun, veth, ... (undefined for a plain device). */
  readonly kind: string | undefined;
  readonly alias: string | undefined;
  readonly master: string | undefined;
  /** Administratively up (the UP flag). */
  readonly up: boolean;
  /** Carrier (LOWER_UP). */
  readonly carrier: boolean;
  readonly mtu: number;
  /** For a vlan link: its parent and id. */
  readonly parent?: string;
  readonly vid?: number;
}

/** What the Network service asks of the host's interfaces (actors/network/reconcile.ts plans them). */
export type Operation =
  | { readonly op: 'delete'; readonly name: string; readonly why: string }
  | { readonly op: 'add-bridge'; readonly name: string; readonly alias: string }
  | { readonly op: 'add-vlan'; readonly name: string; readonly parent: string; readonly vid: number; readonly alias: string }
  | { readonly op: 'add-tap'; readonly name: string; readonly alias: string }
  | { readonly op: 'set-mtu'; readonly name: string; readonly mtu: number }
  | { readonly op: 'set-master'; readonly name: string; readonly master: string }
  | { readonly op: 'set-up'; readonly name: string; readonly up: boolean };

const TIMEOUT_MS = 10_000;
const MAX_BUFFER = 64 * 1024 * 1024;

export type Tool = 'ip' | 'bridge';

/** Runs `tool ...args` (through the exec helper: adapters/exec.ts); resolves with stdout. The error says which command failed and why. */
export async function run(tool: Tool | 'vppctl', args: readonly string[], timeoutMs = TIMEOUT_MS): Promise<string> {
  const command = `${tool} ${args.join(' ')}`;
  const result = await execProgram(tool, args, { timeoutMs, maxBuffer: MAX_BUFFER });
  switch (result.outcome) {
    case 'ok':
      return result.stdout;
    case 'missing':
      throw new AcpError('ACP_ERR_NETWORK_TOOL_MISSING', `'${tool}' is not installed or not on PATH (needed for: ${command}); install iproute2`, { command });
    case 'timeout':
      throw new AcpError('ACP_ERR_NETWORK_COMMAND', `${command} did not finish within ${timeoutMs} ms`, { command });
    default:
      throw new AcpError('ACP_ERR_NETWORK_COMMAND', `${command} failed: ${result.stderr.trim() || result.message}`, { command, stderr: result.stderr.trim() });
  }
}

function parseJson<T>(command: string, text: string, schema: z.ZodType<T>): T {
  let data: unknown;
  try {
    // iproute2 prints nothing at all for an empty list on some versions.
    data = text.trim() === '' ? [] : JSON.parse(text);
  } catch (error) {
    throw new AcpError('ACP_ERR_NETWORK_BAD_OUTPUT', `${command} printed output that is not JSON (${(error as Error).message}): ${text.slice(0, 80)}`, { command });
  }
  const result = schema.safeParse(data);
  if (!result.success) {
    const issue = result.error.issues[0];
    throw new AcpError('ACP_ERR_NETWORK_BAD_OUTPUT', `${command} printed JSON of an unexpected shape: ${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`, { command });
  }
  return result.data;
}

const linkSchema = z.array(
  z.looseObject({
    ifname: z.string(),
    flags: z.array(z.string()).default([]),
    mtu: z.number().int(),
    master: z.string().nullish(),
    ifalias: z.string().nullish(),
    link: z.string().nullish(),
    linkinfo: z
      .looseObject({
        info_kind: z.string().nullish(),
        info_data: z.looseObject({ id: z.number().int().nullish() }).nullish(),
      })
      .nullish(),
  }),
);

/** Every interface of this network namespace, as `ip -j -d link show` reports it. */
export async function listLinks(): Promise<ObservedLink[]> {
  const args = ['-j', '-d', 'link', 'show'];
  const links = parseJson('ip -j -d link show', await run('ip', args), linkSchema);
  return links.map((link) => {
    const kind = link.linkinfo?.info_kind ?? undefined;
    const vid = kind === 'vlan' ? (link.linkinfo?.info_data?.id ?? undefined) : undefined;
    return {
      name: link.ifname,
      kind,
      alias: link.ifalias ?? undefined,
      master: link.master ?? undefined,
      up: link.flags.includes('UP'),
      carrier: link.flags.includes('LOWER_UP'),
      mtu: link.mtu,
      ...(kind === 'vlan' && link.link ? { parent: link.link } : {}),
      ...(vid === undefined ? {} : { vid }),
    };
  });
}

const counters = z.looseObject({ bytes: z.number(), packets: z.number(), errors: z.number(), dropped: z.number() });
const statsSchema = z.array(z.looseObject({ ifname: z.string(), stats64: z.looseObject({ rx: counters, tx: counters }).optional() }));

/** An interface's counters since it was made. */
export interface LinkCounters {
  rxBytes: number;
  txBytes: number;
  rxPackets: number;
  txPackets: number;
  rxErrors: number;
  txErrors: number;
  rxDrops: number;
  txDrops: number;
}

/** Counters of every interface, from `ip -s -j link show`. */
export async function linkCounters(): Promise<Record<string, LinkCounters>> {
  const links = parseJson('ip -s -j link show', await run('ip', ['-s', '-j', 'link', 'show']), statsSchema);
  const out: Record<string, LinkCounters> = {};
  for (const { ifname, stats64 } of links) {
    if (!stats64) continue;
    out[ifname] = {
      rxBytes: stats64.rx.bytes,
      txBytes: stats64.tx.bytes,
      rxPackets: stats64.rx.packets,
      txPackets: stats64.tx.packets,
      rxErrors: stats64.rx.errors,
      txErrors: stats64.tx.errors,
      rxDrops: stats64.rx.dropped,
      txDrops: stats64.tx.dropped,
    };
  }
  return out;
}

function checkName(name: string): string {
  if (!IFNAME_PATTERN.test(name)) throw new AcpError('ACP_ERR_NETWORK_COMMAND', `refusing to run iproute2 on '${name}': not a valid interface name`);
  return name;
}

function checkAlias(alias: string): string {
  // An alias is one argument to execFile; still, only printable ASCII without spaces reaches it.
  if (!/^[\x21-\x7e]{1,255}$/.test(alias)) throw new AcpError('ACP_ERR_NETWORK_COMMAND', `refusing to set alias ${JSON.stringify(alias)}: printable ASCII without spaces only`);
  return alias;
}

/** The `ip` argument lists that carry out one operation (exported for the unit tests). */
export function commandsFor(operation: Operation): string[][] {
  switch (operation.op) {
    case 'delete':
      return [['link', 'del', 'dev', checkName(operation.name)]];
    case 'add-bridge':
      // No STP and no forwarding delay: a guest's port forwards at once, as on a hypervisor switch.
      return [
        ['link', 'add', 'name', provisionalName(checkName(operation.name)), 'type', 'bridge', 'stp_state', '0', 'forward_delay', '0'],
        ...markAndName(operation.name, operation.alias),
      ];
    case 'add-vlan':
      return [
        ['link', 'add', 'link', checkName(operation.parent), 'name', provisionalName(checkName(operation.name)), 'type', 'vlan', 'id', String(operation.vid)],
        ...markAndName(operation.name, operation.alias),
      ];
    case 'add-tap':
      return [['tuntap', 'add', 'dev', provisionalName(checkName(operation.name)), 'mode', 'tap'], ...markAndName(operation.name, operation.alias)];
    case 'set-mtu':
      return [['link', 'set', 'dev', checkName(operation.name), 'mtu', String(operation.mtu)]];
    case 'set-master':
      return [['link', 'set', 'dev', checkName(operation.name), 'master', checkName(operation.master)]];
    case 'set-up':
      return [['link', 'set', 'dev', checkName(operation.name), operation.up ? 'up' : 'down']];
    default: {
      const unreachable: never = operation;
      throw new Error(`unknown operation ${JSON.stringify(unreachable)}`);
    }
  }
}

function markAndName(name: string, alias: string): string[][] {
  const provisional = provisionalName(name);
  return [
    ['link', 'set', 'dev', provisional, 'alias', checkAlias(alias)],
    ['link', 'set', 'dev', provisional, 'name', name],
  ];
}

/** Carries out one operation; a half-made interface (added, then a step refused) is removed again. */
export async function apply(operation: Operation): Promise<void> {
  const commands = commandsFor(operation);
  for (const [index, args] of commands.entries()) {
    try {
      await run('ip', args);
    } catch (error) {
      if (index > 0 && operation.op.startsWith('add-')) await run('ip', ['link', 'del', 'dev', provisionalName(operation.name)]).catch(() => undefined);
      throw error;
    }
  }
}
