import type { Argv } from 'yargs';
import type { SystemMeta } from '../actors/hypervisor/index.js';
import { honestState } from '../actors/hypervisor/recovery.js';
import { requireSystemReferences } from '../actors/system-references.js';
import type { MonitorStatus } from '../actors/monitor/index.js';
import type { RecordView } from '../actors/cdb/index.js';
import type { AcpClient } from '../runtime/client.js';
import { AcpError } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import { assertName } from '../runtime/path.js';
import { printJson, table } from './output.js';
import { systemNicCommands } from './network.js';
import { flagOnce, wholeNumber } from './flags.js';
import { systemDiskCommands } from './system-disks.js';
import { systemSpec } from './system-spec.js';

export interface SystemGlobal {
  home: string;
  json: boolean;
}

type WithClient = <T>(home: string, work: (client: AcpClient) => Promise<T>) => Promise<T>;
type Run = (argv: SystemGlobal, body: () => Promise<number | void>) => Promise<void>;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function checkId(id: string): string {
  return assertName(id, 'system');
}

interface SystemRow {
  id: string;
  driver: string;
  state: string;
  node: string | null;
  pid: number | null;
  since: string | null;
  reason?: string;
  /** With state `unknown` (its node is down): the state its node last published. */
  lastState?: string;
}

/** The nodes this node's monitor holds for down (none when it cannot answer: nothing is assumed). */
async function downNodes(client: AcpClient): Promise<Set<string>> {
  const status = await client.ask<MonitorStatus>('monitor', { type: 'monitor.status' }, { timeoutMs: 3000 }).catch(() => undefined);
  return new Set((status?.members ?? []).filter((member) => member.state === 'down').map((member) => member.name));
}

async function metasOf(client: AcpClient, id?: string): Promise<RecordView[]> {
  const prefix = id === undefined ? 'meta/system/' : `meta/system/${id}@`;
  return (await client.ask<Message & { records: RecordView[] }>('cdb', { type: 'cdb.list', prefix, limit: 10_000 })).records;
}

/** Where a system runs (its newest meta that is not stopped), else where it is placed, else this node. */
async function nodeOf(client: AcpClient, id: string): Promise<string> {
  const object = await client.ask<Message & { record: RecordView }>('cdb', { type: 'cdb.get', key: `object/system/${id}` }).catch((error: unknown) => {
    if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_NOT_FOUND') throw new AcpError('ACP_ERR_CDB_NOT_FOUND', `no system '${id}' (acp system create ${id} ...)`);
    throw error;
  });
  const value = object.record.value as { node?: string; ha?: boolean };
  // An HA system runs where its HA manager placed it: the node whose meta says it is live, before the node it was created on.
  const placed = value.ha === true ? undefined : value.node;
  if (placed) return placed;
  const live = (await metasOf(client, id)).filter((record) => !['stopped', 'defined', 'crashed'].includes((record.value as SystemMeta).state));
  const newest = live.sort((a, b) => ((b.value as SystemMeta).since > (a.value as SystemMeta).since ? 1 : -1))[0];
  return newest ? (newest.value as SystemMeta).node : (value.node ?? client.node.node);
}

/** `acp system start|stop` of an HA system: its object's haState changes, and its HA manager starts or stops it where it placed it. */
async function setHaState(client: AcpClient, id: string, want: 'started' | 'stopped'): Promise<boolean> {
  const object = await client.ask<Message & { record: RecordView }>('cdb', { type: 'cdb.get', key: `object/system/${id}` }).catch((error: unknown) => {
    if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_NOT_FOUND') throw new AcpError('ACP_ERR_CDB_NOT_FOUND', `no system '${id}' (acp system create ${id} ...)`);
    throw error;
  });
  const value = object.record.value as Record<string, unknown>;
  if (value.ha !== true) return false;
  await client.ask('cdb', { type: 'cdb.cas', key: `object/system/${id}`, value: { ...value, haState: want }, expect: object.record.version });
  return true;
}

/**
 * Which node's meta tells a system's state: the node it is placed on (after a migration, the
 * target), else one where it is not stopped, else the newest.
 */
export function currentState(states: readonly SystemMeta[], placed: string | undefined): SystemMeta | undefined {
  const newestFirst = [...states].sort((a, b) => (b.since > a.since ? 1 : -1));
  return newestFirst.find((state) => state.node === placed) ?? newestFirst.find((state) => !['stopped', 'defined'].includes(state.state)) ?? newestFirst[0];
}

function hypervisor(client: AcpClient, node: string): string {
  return `acp://${client.node.cluster}/${node}/hypervisor`;
}

/** `acp system ...`. */
export function systemCommands(y: Argv<SystemGlobal>, run: Run, withClient: WithClient): Argv<SystemGlobal> {
  const lifecycle = (verb: 'start' | 'stop' | 'pause' | 'resume' | 'restart' | 'reset', describe: string) =>
    y.command(
      `${verb} <id>`,
      describe,
      (c) => {
        const withId = c.positional('id', { type: 'string', demandOption: true });
        return verb === 'stop'
          ? withId.option('force', { type: 'boolean', default: false, describe: 'stop at once, without asking the guest to power off' }).option('timeout', { type: 'number', default: 30_000, coerce: flagOnce('timeout', wholeNumber({ min: 0, max: 600_000, unit: 'milliseconds' })), describe: 'ms the guest has to power off' })
          : withId;
      },
      (argv) =>
        run(argv, () =>
          withClient(argv.home, async (client) => {
            const id = checkId(argv.id);
            if ((verb === 'start' || verb === 'stop') && (await setHaState(client, id, verb === 'start' ? 'started' : 'stopped'))) {
              const reply = { id, ha: true, haState: verb === 'start' ? 'started' : 'stopped' };
              if (argv.json) printJson(reply);
              else process.stdout.write(`${id}: HA system, haState ${reply.haState}; its HA manager ${verb}s it (acp ha status)\n`);
              return;
            }
            const node = await nodeOf(client, id);
            const extra = verb === 'stop' ? { force: Boolean((argv as { force?: boolean }).force), timeoutMs: Number((argv as { timeout?: number }).timeout ?? 30_000) } : {};
            const stopMs = 'timeoutMs' in extra ? (extra.timeoutMs ?? 0) : 0;
            const reply = await client.ask<Message & SystemMeta>(hypervisor(client, node), { type: `system.${verb}`, id, ...extra }, { timeoutMs: 180_000 + stopMs });
            if (argv.json) printJson(reply);
            else process.stdout.write(`${id}: ${reply.state} on ${reply.node}${reply.pid ? ` (pid ${reply.pid})` : ''}\n`);
          }),
        ),
    );
  lifecycle('start', 'start a system (on its node, or this one)');
  lifecycle('stop', 'stop a system: power off, then stop it hard after --timeout');
  lifecycle('pause', 'pause a running system');
  lifecycle('resume', 'resume a paused system');
  lifecycle('restart', 'stop and start a system');
  lifecycle('reset', "reset a running system's guest (like its reset button)");
  return y
    .command(
      'create <id>',
      'define a system (object/system/<id>) from flags, or a whole spec with --spec JSON / --file F',
      (c) =>
        c
          .positional('id', { type: 'string', demandOption: true })
          .option('spec', { type: 'string', describe: 'the whole system as JSON' })
          .option('file', { type: 'string', describe: 'a file holding the system as JSON' })
          .option('vcpus', { type: 'number', coerce: flagOnce('vcpus', wholeNumber()) })
          .option('memory', { type: 'number', coerce: flagOnce('memory', wholeNumber({ unit: 'MiB' })), describe: 'MiB' })
          .option('driver', { choices: ['qemu', 'sim'] as const })
          .option('kernel', { type: 'string', describe: 'boot this kernel (with --initrd, --cmdline)' })
          .option('initrd', { type: 'string' })
          .option('cmdline', { type: 'string' })
          .option('disk', { type: 'string', array: true, describe: 'a disk: POOL/NAME[,bus=virtio|scsi|ide][,cache=..][,readonly] (repeat for more; the first boots), or /path/image.qcow2 to boot from a file' })
          .option('iso', { type: 'string', describe: 'a CD-ROM: POOL/NAME of an ISO volume' })
          .option('display', { choices: ['none', 'vnc'] as const, describe: "vnc: a VGA card and a VNC server on a Unix socket, shown in the web UI (qemu; default none)" })
          .option('ha', { type: 'boolean', describe: 'highly available: the HA manager places it, restarts it, and recovers it on another node when its node fails' })
          .option('prefer', { type: 'string', describe: 'with --ha: preferred nodes with priorities, NODE[:PRIORITY],... (higher first)' })
          .option('strict', { type: 'boolean', describe: 'with --ha and --prefer: only ever on the preferred nodes' })
          .option('anti-affinity', { type: 'string', describe: 'with --ha: systems it never shares a node with, ID,...' })
          .option('max-restart', { type: 'number', coerce: flagOnce('max-restart', wholeNumber()), describe: 'with --ha: restarts on the same node before it is relocated (default 1)' })
          .option('max-relocate', { type: 'number', coerce: flagOnce('max-relocate', wholeNumber()), describe: 'with --ha: moves to other nodes before it is left in error (default 1)' })
          .option('node', { type: 'string', describe: 'the node it runs on' })
          .option('restart', { choices: ['never', 'on-crash', 'always'] as const })
          .option('nic', { type: 'string', array: true, describe: 'a NIC: NETWORK[,vlan=N][,mac=..][,model=virtio|e1000] (repeat for more)' })
          .option('autostart', { type: 'boolean', describe: 'start it when its node (--node) starts (non-HA systems)' })
          .option('start-order', { type: 'number', coerce: flagOnce('start-order', wholeNumber()), describe: 'with --autostart: lower starts first (unset: last)' })
          .option('start-delay', { type: 'number', coerce: flagOnce('start-delay', wholeNumber({ unit: 'seconds' })), describe: 'with --autostart: seconds to wait after starting it before the next' }),
      (argv) =>
        run(argv, async () => {
          // The spec is checked before the node is asked anything: a bad one is a usage error wherever it is typed.
          const id = checkId(argv.id);
          const value = systemSpec(id, argv);
          return withClient(argv.home, async (client) => {
            await requireSystemReferences((message) => client.ask('cdb', message), value, client.node.node);
            try {
              const reply = await client.ask<Message & { version: string }>('cdb', { type: 'cdb.cas', key: `object/system/${id}`, value, expect: null });
              if (argv.json) printJson({ id, version: reply.version, spec: value });
              else if ((value as { ha?: boolean }).ha === true) process.stdout.write(`system ${id} created (version ${reply.version}); the HA manager starts it (acp ha status)\n`);
              else process.stdout.write(`system ${id} created (version ${reply.version}); acp system start ${id}\n`);
            } catch (error) {
              if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_CONFLICT') throw new AcpError('ACP_ERR_CDB_CONFLICT', `system '${id}' already exists; acp system rm ${id} first, or pick another id`);
              throw error;
            }
          });
        }),
    )
    .command('ls', 'every system, with its state and node', (c) => c, (argv) =>
      run(argv, () =>
        withClient(argv.home, async (client) => {
          const objects = (await client.ask<Message & { records: RecordView[] }>('cdb', { type: 'cdb.list', prefix: 'object/system/', limit: 10_000 })).records;
          const metas = await metasOf(client);
          const down = await downNodes(client);
          const rows: SystemRow[] = objects.map((record) => {
            const id = record.key.slice('object/system/'.length);
            const states = metas.filter((meta) => meta.key.startsWith(`meta/system/${id}@`)).map((meta) => meta.value as SystemMeta);
            const found = currentState(states, (record.value as { node?: string }).node);
            // A live state on a node that is down is not known to hold: unknown, with what it was.
            const current = found ? honestState(found, down.has(found.node)) : undefined;
            return {
              id,
              driver: (record.value as { driver: string }).driver,
              state: current?.state ?? 'defined',
              node: current?.node ?? (record.value as { node?: string }).node ?? null,
              pid: current?.pid ?? null,
              since: current?.since ?? null,
              ...(current?.reason ? { reason: current.reason } : {}),
              ...(current?.lastState ? { lastState: current.lastState, reason: `node ${current.node} is down; last known ${current.lastState} since ${current.since}` } : {}),
            };
          });
          if (argv.json) {
            printJson(rows);
            return;
          }
          process.stdout.write(`${table([['ID', 'DRIVER', 'STATE', 'NODE', 'PID', 'SINCE'], ...rows.map((row) => [row.id, row.driver, row.lastState ? `unknown (was ${row.lastState})` : row.state, row.node ?? '-', row.pid === null ? '-' : String(row.pid), row.since ?? '-'])])}\n`);
        }),
      ),
    )
    .command('show <id>', 'a system: its spec and its state on each node', (c) => c.positional('id', { type: 'string', demandOption: true }), (argv) =>
      run(argv, () =>
        withClient(argv.home, async (client) => {
          const id = checkId(argv.id);
          await nodeOf(client, id);
          const spec = (await client.ask<Message & { record: RecordView }>('cdb', { type: 'cdb.get', key: `object/system/${id}` })).record;
          const states = (await metasOf(client, id)).map((record) => record.value as SystemMeta);
          if (argv.json) printJson({ id, spec: spec.value, version: spec.version, states });
          else process.stdout.write(`${JSON.stringify({ id, spec: spec.value, version: spec.version, states }, null, 2)}\n`);
        }),
      ),
    )
    .command('log <id>', "a system's lifecycle on every node: each state change with its reason, oldest first", (c) => c.positional('id', { type: 'string', demandOption: true }), (argv) =>
      run(argv, () =>
        withClient(argv.home, async (client) => {
          const id = checkId(argv.id);
          await nodeOf(client, id);
          const steps = (await metasOf(client, id))
            .flatMap((record) => {
              const meta = record.value as SystemMeta;
              return (meta.history ?? []).map((step) => ({ ...step, node: meta.node }));
            })
            .sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
          if (argv.json) {
            printJson(steps);
            return;
          }
          if (steps.length === 0) {
            process.stdout.write(`system ${id} has not run yet (acp system start ${id})\n`);
            return;
          }
          const rows = steps.map((step) => [step.at, step.node, step.event, step.state, step.reason ?? '']);
          process.stdout.write(`${table([['TIME', 'NODE', 'EVENT', 'STATE', 'REASON'], ...rows])}\n`);
        }),
      ),
    )
    .command(
      'migrate <id>',
      'move a running system to another node: live for qemu (its disks must be on shared pools), by state transfer for sim',
      (c) => c.positional('id', { type: 'string', demandOption: true }).option('to', { type: 'string', demandOption: true, describe: 'the node to move it to' }),
      (argv) =>
        run(argv, () =>
          withClient(argv.home, async (client) => {
            const id = checkId(argv.id);
            assertName(argv.to, '--to node');
            const node = await nodeOf(client, id);
            const started = Date.now();
            const reply = await client.ask<Message & SystemMeta & { from: string; to: string }>(hypervisor(client, node), { type: 'system.migrate', id, to: argv.to }, { timeoutMs: 900_000 });
            if (argv.json) printJson({ ...reply, ms: Date.now() - started });
            else process.stdout.write(`${id}: migrated from ${reply.from} to ${reply.to} in ${((Date.now() - started) / 1000).toFixed(1)} s; ${reply.state} there${reply.pid ? ` (pid ${reply.pid})` : ''}\n`);
          }),
        ),
    )
    .command('nic', "a system's NICs (acp system nic add|rm)", (c) => systemNicCommands(c, run, withClient))
    .command('disk', "a system's disks (acp system disk attach|detach)", (c) => systemDiskCommands(c, run, withClient))
    .command('rm <id>', 'delete a stopped system', (c) => c.positional('id', { type: 'string', demandOption: true }), (argv) =>
      run(argv, () =>
        withClient(argv.home, async (client) => {
          const id = checkId(argv.id);
          await nodeOf(client, id);
          const live = (await metasOf(client, id)).map((record) => record.value as SystemMeta).filter((meta) => !['stopped', 'defined', 'crashed'].includes(meta.state));
          if (live.length > 0) throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `system '${id}' is ${live[0]!.state} on ${live[0]!.node}; acp system stop ${id} first`);
          const reply = await client.ask<Message & { version: string }>('cdb', { type: 'cdb.delete', key: `object/system/${id}` });
          if (argv.json) printJson({ id, deleted: true, version: reply.version });
          else process.stdout.write(`system ${id} deleted\n`);
        }),
      ),
    )
    .command(
      'console <id>',
      "print a system's serial console log (from the node it runs on); --follow streams it",
      (c) => c.positional('id', { type: 'string', demandOption: true }).option('follow', { type: 'boolean', alias: 'f', default: false }),
      (argv) =>
        run(argv, () =>
          withClient(argv.home, async (client) => {
            const id = checkId(argv.id);
            const node = await nodeOf(client, id);
            let offset = 0;
            let stop = false;
            process.once('SIGINT', () => {
              stop = true;
            });
            do {
              const chunk = await client.ask<Message & { data: string; offset: number; size: number }>(hypervisor(client, node), { type: 'system.console', id, offset });
              if (chunk.data.length > 0) process.stdout.write(chunk.data);
              offset = chunk.offset;
              if (chunk.offset < chunk.size) continue;
              if (argv.follow) await sleep(300);
            } while (argv.follow && !stop);
          }),
        ),
    )
    .demandCommand(1, 'name a system command: create, ls, show, start, stop, pause, resume, restart, reset, migrate, rm, console');
}
