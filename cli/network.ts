import type { Argv } from 'yargs';
import type { RecordView } from '../actors/cdb/index.js';
import type { NetworkReport } from '../actors/network/reconcile.js';
import type { AcpClient } from '../runtime/client.js';
import { AcpError } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import { assertName } from '../runtime/path.js';
import { newSystemSchema, systemObjectSchema } from '../actors/model.js';
import { requireSystemNetworks } from '../actors/system-references.js';
import { flagOnce, wholeNumber } from './flags.js';
import { printJson, table } from './output.js';

export interface NetworkGlobal {
  home: string;
  json: boolean;
}

type WithClient = <T>(home: string, work: (client: AcpClient) => Promise<T>) => Promise<T>;
type Run = (argv: NetworkGlobal, body: () => Promise<number | void>) => Promise<void>;

export interface NetworkFlags {
  type: string;
  vlan?: number;
  vids?: string;
  uplink?: string;
  mtu?: number;
  nodes?: string;
}

function usage(message: string): AcpError {
  return new AcpError('ACP_ERR_CLI_USAGE', message);
}

/** `10,20-30` as [10, 20, 21, ..., 30]; each id 1-4094. */
export function parseVids(text: string): number[] {
  const vids = new Set<number>();
  for (const part of text.split(',').map((piece) => piece.trim()).filter((piece) => piece.length > 0)) {
    const match = /^(\d{1,4})(?:-(\d{1,4}))?$/.exec(part);
    if (!match) throw usage(`--vids: '${part}' is not a VLAN id or a range like 20-30`);
    const from = Number(match[1]);
    const to = Number(match[2] ?? match[1]);
    if (from < 1 || to > 4094 || from > to) throw usage(`--vids: '${part}' must lie within 1-4094, low to high`);
    for (let vid = from; vid <= to; vid += 1) vids.add(vid);
  }
  if (vids.size === 0) throw usage('--vids names no VLAN id');
  return [...vids].sort((a, b) => a - b);
}

/** `--uplink eth1` (every node) or `--uplink n1=eth1,n2=bond0` (per node). */
export function parseUplink(text: string): { uplink: string } | { uplinks: Record<string, string> } {
  if (!text.includes('=')) return { uplink: text };
  const uplinks: Record<string, string> = {};
  for (const pair of text.split(',')) {
    const [node, name, ...rest] = pair.split('=');
    if (!node || !name || rest.length > 0) throw usage(`--uplink: '${pair}' is not NODE=INTERFACE`);
    uplinks[assertName(node.trim(), 'node')] = name.trim();
  }
  return { uplinks };
}

/** The network object the flags describe (the daemon validates it with the model's schema). */
export function networkSpec(name: string, flags: NetworkFlags): Record<string, unknown> {
  return {
    name: assertName(name, 'network'),
    type: flags.type,
    ...(flags.vlan === undefined ? {} : { vlan: flags.vlan }),
    ...(flags.vids === undefined ? {} : { vids: parseVids(flags.vids) }),
    ...(flags.vids !== undefined && flags.type === 'bridge' ? { vlanAware: true } : {}),
    ...(flags.uplink === undefined ? {} : parseUplink(flags.uplink)),
    ...(flags.mtu === undefined ? {} : { mtu: flags.mtu }),
    ...(flags.nodes === undefined ? {} : { nodes: flags.nodes.split(',').map((node) => assertName(node.trim(), 'node')) }),
  };
}

/** `--nic lan[,vlan=10][,mac=02:..][,model=e1000]`: one NIC of a system (the schema checks the values). */
export function parseNic(text: string): Record<string, unknown> {
  const [network, ...options] = text.split(',');
  if (!network || network.includes('=')) throw usage(`--nic ${text}: start with the network's name, e.g. --nic lan,model=virtio`);
  const nic: Record<string, unknown> = { network };
  for (const option of options) {
    const [key, value, ...rest] = option.split('=');
    if (value === undefined || rest.length > 0) throw usage(`--nic ${text}: '${option}' is not KEY=VALUE`);
    switch (key) {
      case 'vlan':
      case 'mtu':
        nic[key] = Number(value);
        break;
      case 'mac':
      case 'model':
        nic[key] = value;
        break;
      default:
        throw usage(`--nic ${text}: unknown option '${key}' (vlan, mac, model, mtu)`);
    }
  }
  return nic;
}

interface NodeReport extends NetworkReport {
  node: string;
}

async function reportsOf(client: AcpClient, name?: string): Promise<Map<string, NodeReport[]>> {
  const prefix = name === undefined ? 'meta/network/' : `meta/network/${name}@`;
  const { records } = await client.ask<Message & { records: RecordView[] }>('cdb', { type: 'cdb.list', prefix, limit: 10_000 });
  const byNetwork = new Map<string, NodeReport[]>();
  for (const record of records) {
    const [id, node] = record.key.slice('meta/network/'.length).split('@') as [string, string];
    byNetwork.set(id, [...(byNetwork.get(id) ?? []), { ...(record.value as NetworkReport), node }]);
  }
  return byNetwork;
}

/** `acp network ...`. */
export function networkCommands(y: Argv<NetworkGlobal>, run: Run, withClient: WithClient): Argv<NetworkGlobal> {
  return y
    .command(
      'create <name>',
      'define a network; every node that carries it makes it (a bridge, a VLAN, a trunk)',
      (c) =>
        c
          .positional('name', { type: 'string', demandOption: true })
          .option('type', { choices: ['bridge', 'vlan', 'trunk', 'vpp-vlan'] as const, demandOption: true })
          .option('vlan', { type: 'number', coerce: flagOnce('vlan', wholeNumber()), describe: 'the 802.1Q id (vlan, vpp-vlan)' })
          .option('vids', { type: 'string', describe: 'VLAN ids a trunk carries, e.g. 10,20-30' })
          .option('uplink', { type: 'string', describe: 'the uplink on every node (eth1), or per node (n1=eth1,n2=bond0)' })
          .option('mtu', { type: 'number', coerce: flagOnce('mtu', wholeNumber()) })
          .option('nodes', { type: 'string', describe: 'the nodes that carry it (default: all)' }),
      (argv) =>
        run(argv, () =>
          withClient(argv.home, async (client) => {
            const spec = networkSpec(argv.name, argv);
            const reply = await client.ask<Message & { version: string; spec: unknown }>('network', { type: 'network.create', spec }, { timeoutMs: 30_000 });
            if (argv.json) printJson(reply);
            else process.stdout.write(`network ${argv.name} created (version ${reply.version}); acp network ls shows it on each node\n`);
          }),
        ),
    )
    .command('ls', 'every network, with its state on each node', (c) => c, (argv) =>
      run(argv, () =>
        withClient(argv.home, async (client) => {
          const { records } = await client.ask<Message & { records: RecordView[] }>('cdb', { type: 'cdb.list', prefix: 'object/network/', limit: 10_000 });
          const reports = await reportsOf(client);
          const rows = records.map((record) => {
            const spec = record.value as { name: string; type: string; vlan?: number };
            return { name: spec.name, type: spec.type, vlan: spec.vlan ?? null, nodes: reports.get(spec.name) ?? [] };
          });
          if (argv.json) {
            printJson(rows);
            return;
          }
          const lines = rows.flatMap((row) =>
            (row.nodes.length > 0 ? row.nodes : [undefined]).map((report) => [row.name, row.type, row.vlan === null ? '-' : String(row.vlan), report?.node ?? '-', report?.state ?? 'pending', report?.interfaces.join(',') || '-', report?.reason ?? '']),
          );
          process.stdout.write(`${table([['NAME', 'TYPE', 'VLAN', 'NODE', 'STATE', 'INTERFACES', 'REASON'], ...lines])}\n`);
        }),
      ),
    )
    .command('show <name>', 'a network: its spec and its state on each node', (c) => c.positional('name', { type: 'string', demandOption: true }), (argv) =>
      run(argv, () =>
        withClient(argv.home, async (client) => {
          const name = assertName(argv.name, 'network');
          const record = await client.ask<Message & { record: RecordView }>('cdb', { type: 'cdb.get', key: `object/network/${name}` }).catch((error: unknown) => {
            if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_NOT_FOUND') throw new AcpError('ACP_ERR_CDB_NOT_FOUND', `no network '${name}' (acp network ls)`);
            throw error;
          });
          const shown = { name, spec: record.record.value, version: record.record.version, nodes: (await reportsOf(client, name)).get(name) ?? [] };
          if (argv.json) printJson(shown);
          else process.stdout.write(`${JSON.stringify(shown, null, 2)}\n`);
        }),
      ),
    )
    .command('rm <name>', 'remove a network (refused while a system has a NIC on it)', (c) => c.positional('name', { type: 'string', demandOption: true }), (argv) =>
      run(argv, () =>
        withClient(argv.home, async (client) => {
          const name = assertName(argv.name, 'network');
          const reply = await client.ask<Message>('network', { type: 'network.rm', name }, { timeoutMs: 30_000 });
          if (argv.json) printJson(reply);
          else process.stdout.write(`network ${name} removed; every node takes its interfaces down\n`);
        }),
      ),
    )
    .demandCommand(1, 'name a network command: create, ls, show, rm');
}

/**
 * `acp system nic add|rm`: edits the system object's `nics` with a compare-and-set (a concurrent
 * edit is refused, not lost). The change takes effect at the system's next start.
 */
export function systemNicCommands(y: Argv<NetworkGlobal>, run: Run, withClient: WithClient): Argv<NetworkGlobal> {
  /** Adding is checked as a new spec (its network must exist); removing works on any stored one. */
  const edit = async (client: AcpClient, id: string, change: (nics: Record<string, unknown>[]) => Record<string, unknown>[], adding = false) => {
    const key = `object/system/${assertName(id, 'system')}`;
    const current = await client.ask<Message & { record: RecordView }>('cdb', { type: 'cdb.get', key }).catch((error: unknown) => {
      if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_NOT_FOUND') throw new AcpError('ACP_ERR_CDB_NOT_FOUND', `no system '${id}' (acp system create ${id} ...)`);
      throw error;
    });
    const spec = current.record.value as { nics?: Record<string, unknown>[] };
    const next = { ...spec, nics: change(spec.nics ?? []) };
    const checked = (adding ? newSystemSchema : systemObjectSchema).safeParse(next);
    if (!checked.success) {
      const issue = checked.error.issues[0]!;
      throw usage(`bad NIC: field '${issue.path.join('.')}': ${issue.message}`);
    }
    if (adding) await requireSystemNetworks((message) => client.ask('cdb', message), checked.data.nics.slice(-1));
    await client.ask('cdb', { type: 'cdb.cas', key, value: checked.data, expect: current.record.version });
    return checked.data.nics;
  };
  const show = (argv: NetworkGlobal, id: string, nics: readonly { network: string; mac?: string; model: string }[]) => {
    if (argv.json) printJson({ id, nics });
    else process.stdout.write(`${id}: ${nics.length === 0 ? 'no NICs' : nics.map((nic, index) => `${index}: ${nic.network}${nic.mac ? ` ${nic.mac}` : ''} (${nic.model})`).join(', ')}; the change takes effect at its next start\n`);
  };
  return y
    .command('add <id> <nic>', "add a NIC: NETWORK[,mac=..][,model=virtio|e1000][,mtu=N]", (c) => c.positional('id', { type: 'string', demandOption: true }).positional('nic', { type: 'string', demandOption: true }), (argv) =>
      run(argv, () => withClient(argv.home, async (client) => show(argv, argv.id, await edit(client, argv.id, (nics) => [...nics, parseNic(argv.nic)], true)))),
    )
    .command('rm <id> <which>', 'remove a NIC, by its index or its network', (c) => c.positional('id', { type: 'string', demandOption: true }).positional('which', { type: 'string', demandOption: true }), (argv) =>
      run(argv, () =>
        withClient(argv.home, async (client) => {
          const nics = await edit(client, argv.id, (existing) => {
            const onNetwork = existing.flatMap((nic, at) => (nic['network'] === argv.which ? [at] : []));
            if (onNetwork.length > 1) throw usage(`system '${argv.id}' has ${onNetwork.length} NICs on ${argv.which} (${onNetwork.join(', ')}); give the index of the one to remove`);
            const index = /^\d+$/.test(argv.which) ? Number(argv.which) : (onNetwork[0] ?? -1);
            if (index < 0 || index >= existing.length) throw usage(`system '${argv.id}' has no NIC ${argv.which} (it has ${existing.length})`);
            return existing.filter((_, at) => at !== index);
          });
          show(argv, argv.id, nics);
        }),
      ),
    )
    .demandCommand(1, 'name a nic command: add, rm');
}
