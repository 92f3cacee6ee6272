import type { Argv } from 'yargs';
import type { RecordView } from '../actors/cdb/index.js';
import type { PoolReport, PoolStats, ShareReport } from '../actors/storage/pools.js';
import type { AcpClient } from '../runtime/client.js';
import { AcpError } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import { assertName } from '../runtime/path.js';
import { flagOnce, sizeValue, wholeNumber } from './flags.js';
import { printJson, table } from './output.js';

export interface StorageGlobal {
  home: string;
  json: boolean;
}

type WithClient = <T>(home: string, work: (client: AcpClient) => Promise<T>) => Promise<T>;
type Run = (argv: StorageGlobal, body: () => Promise<number | void>) => Promise<void>;

function usage(message: string): AcpError {
  return new AcpError('ACP_ERR_CLI_USAGE', message);
}

export function formatBytes(bytes: number): string {
  for (const [unit, size] of [['T', 1024 ** 4], ['G', 1024 ** 3], ['M', 1024 ** 2], ['K', 1024]] as const) {
    if (bytes >= size) return `${(bytes / size).toFixed(bytes % size === 0 ? 0 : 1)}${unit}`;
  }
  return `${bytes}B`;
}

/** What the CLI says when the Storage service rounded a size up to whole 512-byte sectors (as qemu-img makes images). */
export function roundedNote(asked: number, made: number): string {
  return made === asked ? '' : ` (${asked} bytes rounded up to ${made}: a volume is whole 512-byte sectors)`;
}

/** `POOL/NAME`, both names. */
export function parseVolumeRef(text: string, what = 'volume'): { pool: string; name: string } {
  const [pool, name, ...rest] = text.split('/');
  if (!pool || !name || rest.length > 0) throw usage(`${what} '${text}': give it as POOL/NAME`);
  return { pool: assertName(pool, 'pool'), name: assertName(name, 'volume') };
}

/** Where a request goes: this node's storage service, or `--node`'s. */
function target(client: AcpClient, node: string | undefined): string {
  return node === undefined ? 'storage' : `acp://${client.node.cluster}/${assertName(node, 'node')}/storage`;
}

async function listAll(client: AcpClient, prefix: string): Promise<RecordView[]> {
  const { records } = await client.ask<Message & { records: RecordView[] }>('cdb', { type: 'cdb.list', prefix, limit: 10_000 });
  return records.filter((record) => !record.deleted);
}

function splitKey(key: string, prefix: string): [string, string] {
  const rest = key.slice(prefix.length);
  const at = rest.lastIndexOf('@');
  return [rest.slice(0, at), rest.slice(at + 1)];
}

const nodeOption = { type: 'string', describe: "the node whose storage service does it (default: this one); a pool that is not shared keeps each volume on the node that made it" } as const;

/** `acp storage ...`. */
export function storageCommands(y: Argv<StorageGlobal>, run: Run, withClient: WithClient): Argv<StorageGlobal> {
  const reply = (argv: StorageGlobal, result: unknown, text: string) => {
    if (argv.json) printJson(result);
    else process.stdout.write(`${text}\n`);
  };
  return y
    .command('pool', 'pools: where volumes live (dir, btrfs; lvm-thin where device-mapper exists)', (p) =>
      p
        .command(
          'create <name>',
          'define a pool; every node that carries it activates it (makes a dir pool\'s directory)',
          (c) =>
            c
              .positional('name', { type: 'string', demandOption: true })
              .option('type', { choices: ['dir', 'btrfs', 'lvm-thin'] as const, demandOption: true })
              .option('path', { type: 'string', describe: 'its directory on every node (absolute)' })
              .option('share', { type: 'string', describe: 'or: the share whose mount point is its directory' })
              .option('shared', { type: 'boolean', describe: 'every node sees the same content there (systems on it can migrate)' })
              .option('content', { type: 'string', describe: 'what it holds: images, iso (comma-separated; default images)' })
              .option('nodes', { type: 'string', describe: 'the nodes that carry it (default: all)' }),
          (argv) =>
            run(argv, () =>
              withClient(argv.home, async (client) => {
                const spec = {
                  name: assertName(argv.name, 'pool'),
                  type: argv.type,
                  ...(argv.path === undefined ? {} : { path: argv.path }),
                  ...(argv.share === undefined ? {} : { share: assertName(argv.share, 'share') }),
                  ...(argv.shared === undefined ? {} : { shared: argv.shared }),
                  ...(argv.content === undefined ? {} : { content: argv.content.split(',').map((part) => part.trim()) }),
                  ...(argv.nodes === undefined ? {} : { nodes: argv.nodes.split(',').map((node) => assertName(node.trim(), 'node')) }),
                };
                const result = await client.ask<Message & { status?: PoolReport }>('storage', { type: 'storage.pool-create', spec }, { timeoutMs: 60_000 });
                reply(argv, result, `pool ${spec.name} created${result.status ? `; here it is ${result.status.state}${result.status.reason ? ` (${result.status.reason})` : ''}` : ''}; acp storage pool ls shows it on each node`);
              }),
            ),
        )
        .command('ls', 'every pool, per node: state, total, used, available', (c) => c, (argv) =>
          run(argv, () =>
            withClient(argv.home, async (client) => {
              const pools = await listAll(client, 'object/storage/pool/');
              const metas = await listAll(client, 'meta/storage/pool/');
              const stats = new Map((await listAll(client, 'stats/storage/pool/')).map((record) => [record.key.slice('stats/'.length), record.value as PoolStats]));
              const rows = pools.map((record) => {
                const spec = record.value as { name: string; type: string; shared: boolean; path?: string; share?: string };
                const nodes = metas
                  .filter((meta) => splitKey(meta.key, 'meta/storage/pool/')[0] === spec.name)
                  .map((meta) => {
                    const node = splitKey(meta.key, 'meta/storage/pool/')[1];
                    return { node, ...(meta.value as PoolReport), stats: stats.get(meta.key.slice('meta/'.length)) ?? null };
                  });
                return { name: spec.name, type: spec.type, shared: spec.shared, path: spec.path ?? null, share: spec.share ?? null, nodes };
              });
              if (argv.json) {
                printJson(rows);
                return;
              }
              const lines = rows.flatMap((row) =>
                (row.nodes.length > 0 ? row.nodes : [undefined]).map((node) => {
                  const stats = node?.stats;
                  return [row.name, row.type, row.shared ? 'yes' : 'no', node?.node ?? '-', node?.state ?? 'pending', stats ? formatBytes(stats.total) : '-', stats ? formatBytes(stats.used) : '-', stats ? formatBytes(stats.available) : '-', stats && stats.total > 0 ? `${Math.round((stats.used / stats.total) * 100)}%` : '-', node?.path ?? row.path ?? `share:${row.share}`, node?.reason ?? ''];
                }),
              );
              process.stdout.write(`${table([['NAME', 'TYPE', 'SHARED', 'NODE', 'STATE', 'TOTAL', 'USED', 'AVAIL', 'USE%', 'PATH', 'REASON'], ...lines])}\n`);
            }),
          ),
        )
        .command('rm <name>', 'remove a pool (refused while it has volumes; its directory and files stay)', (c) => c.positional('name', { type: 'string', demandOption: true }), (argv) =>
          run(argv, () =>
            withClient(argv.home, async (client) => {
              const result = await client.ask('storage', { type: 'storage.pool-rm', name: assertName(argv.name, 'pool') }, { timeoutMs: 60_000 });
              reply(argv, result, `pool ${argv.name} removed (its directory and files stay)`);
            }),
          ),
        )
        .demandCommand(1, 'name a pool command: create, ls, rm'),
    )
    .command('share', 'network file shares (sshfs; nfs and cifs where the kernel has the client), mounted on the nodes that use them', (s) =>
      s
        .command(
          'create <name>',
          'define a share; the nodes with a pool on it mount it',
          (c) =>
            c
              .positional('name', { type: 'string', demandOption: true })
              .option('type', { choices: ['sshfs', 'nfs', 'cifs'] as const, demandOption: true })
              .option('server', { type: 'string', demandOption: true })
              .option('path', { type: 'string', demandOption: true, describe: 'the directory on the server' })
              .option('port', { type: 'number', coerce: flagOnce('port', wholeNumber()) })
              .option('user', { type: 'string' })
              .option('identity-file', { type: 'string', describe: 'sshfs: the private key to log in with (the same path on every node)' })
              .option('mountpoint', { type: 'string', describe: "where it is mounted (default: <home>/shares/<name> on each node)" })
              .option('nodes', { type: 'string', describe: 'nodes that mount it even without a pool on it' }),
          (argv) =>
            run(argv, () =>
              withClient(argv.home, async (client) => {
                const spec = {
                  name: assertName(argv.name, 'share'),
                  type: argv.type,
                  server: argv.server,
                  path: argv.path,
                  ...(argv.port === undefined ? {} : { port: argv.port }),
                  ...(argv.user === undefined ? {} : { user: argv.user }),
                  ...(argv.identityFile === undefined ? {} : { identityFile: argv.identityFile }),
                  ...(argv.mountpoint === undefined ? {} : { mountpoint: argv.mountpoint }),
                  ...(argv.nodes === undefined ? {} : { nodes: argv.nodes.split(',').map((node) => assertName(node.trim(), 'node')) }),
                };
                const result = await client.ask('storage', { type: 'storage.share-create', spec }, { timeoutMs: 60_000 });
                reply(argv, result, `share ${spec.name} created; acp storage pool create ... --share ${spec.name} puts a pool on it`);
              }),
            ),
        )
        .command('ls', 'every share, per node: mounted or why not', (c) => c, (argv) =>
          run(argv, () =>
            withClient(argv.home, async (client) => {
              const shares = await listAll(client, 'object/storage/share/');
              const metas = await listAll(client, 'meta/storage/share/');
              const rows = shares.map((record) => {
                const spec = record.value as { name: string; type: string; server: string; path: string };
                const nodes = metas.filter((meta) => splitKey(meta.key, 'meta/storage/share/')[0] === spec.name).map((meta) => ({ node: splitKey(meta.key, 'meta/storage/share/')[1], ...(meta.value as ShareReport) }));
                return { ...spec, nodes };
              });
              if (argv.json) {
                printJson(rows);
                return;
              }
              const lines = rows.flatMap((row) => (row.nodes.length > 0 ? row.nodes : [undefined]).map((node) => [row.name, row.type, `${row.server}:${row.path}`, node?.node ?? '-', node?.state ?? 'unused', node?.mountpoint ?? '-', node?.reason ?? '']));
              process.stdout.write(`${table([['NAME', 'TYPE', 'SOURCE', 'NODE', 'STATE', 'MOUNTPOINT', 'REASON'], ...lines])}\n`);
            }),
          ),
        )
        .command('rm <name>', 'remove a share (refused while a pool is on it); the nodes unmount it', (c) => c.positional('name', { type: 'string', demandOption: true }), (argv) =>
          run(argv, () =>
            withClient(argv.home, async (client) => {
              const result = await client.ask('storage', { type: 'storage.share-rm', name: assertName(argv.name, 'share') }, { timeoutMs: 60_000 });
              reply(argv, result, `share ${argv.name} removed; the nodes unmount it`);
            }),
          ),
        )
        .demandCommand(1, 'name a share command: create, ls, rm'),
    )
    .command('volume', 'volumes: disk images (qcow2, raw) and ISO images in pools', (v) =>
      v
        .command(
          'create <volume>',
          'a new, empty volume POOL/NAME',
          (c) => c.positional('volume', { type: 'string', demandOption: true }).option('size', { type: 'string', demandOption: true, coerce: flagOnce('size', sizeValue), describe: 'e.g. 64M, 8G (rounded up to whole 512-byte sectors)' }).option('format', { choices: ['qcow2', 'raw'] as const, default: 'qcow2' as const }).option('node', nodeOption),
          (argv) =>
            run(argv, () =>
              withClient(argv.home, async (client) => {
                const { pool, name } = parseVolumeRef(argv.volume);
                const result = await client.ask<Message & { file: string; volume: { sizeBytes: number } }>(target(client, argv.node), { type: 'storage.volume-create', pool, name, sizeBytes: argv.size, format: argv.format }, { timeoutMs: 120_000 });
                reply(argv, result, `volume ${pool}/${name} created: ${result.file}${roundedNote(argv.size, result.volume.sizeBytes)}`);
              }),
            ),
        )
        .command('ls [pool]', 'every volume (or a pool\'s)', (c) => c.positional('pool', { type: 'string' }), (argv) =>
          run(argv, () =>
            withClient(argv.home, async (client) => {
              const prefix = argv.pool === undefined ? 'object/storage/volume/' : `object/storage/volume/${assertName(argv.pool, 'pool')}/`;
              const rows = (await listAll(client, prefix)).map((record) => record.value as { name: string; pool: string; sizeBytes: number; format: string; node?: string; backing?: string; snapshots?: { name: string }[] });
              if (argv.json) {
                printJson(rows);
                return;
              }
              // A volume names no node when its pool is shared; on a pool that is not, one that names none (written by hand) lives nowhere known.
              const sharedPools = new Set((await listAll(client, 'object/storage/pool/')).filter((record) => (record.value as { shared?: boolean } | null)?.shared === true).map((record) => record.key.slice('object/storage/pool/'.length)));
              const nodeOf = (row: { pool: string; node?: string }) => row.node ?? (sharedPools.has(row.pool) ? '(shared)' : '(unknown)');
              const lines = rows.map((row) => [`${row.pool}/${row.name}`, row.format, formatBytes(row.sizeBytes), nodeOf(row), row.backing ? `${row.pool}/${row.backing}` : '-', (row.snapshots ?? []).map((snapshot) => snapshot.name).join(',') || '-']);
              process.stdout.write(`${table([['VOLUME', 'FORMAT', 'SIZE', 'NODE', 'BACKING', 'SNAPSHOTS'], ...lines])}\n`);
            }),
          ),
        )
        .command('info <volume>', 'qemu-img info of a volume: size, actual use, backing chain, snapshots', (c) => c.positional('volume', { type: 'string', demandOption: true }).option('node', nodeOption), (argv) =>
          run(argv, () =>
            withClient(argv.home, async (client) => {
              const { pool, name } = parseVolumeRef(argv.volume);
              const result = await client.ask(target(client, argv.node), { type: 'storage.volume-info', pool, name }, { timeoutMs: 60_000 });
              if (argv.json) printJson(result);
              else process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
            }),
          ),
        )
        .command('resize <volume>', 'change its size (it only grows while attached to a system; a running QEMU guest sees it grow)', (c) => c.positional('volume', { type: 'string', demandOption: true }).option('size', { type: 'string', demandOption: true, coerce: flagOnce('size', sizeValue), describe: 'e.g. 96M, 8G (rounded up to whole 512-byte sectors)' }).option('node', nodeOption), (argv) =>
          run(argv, () =>
            withClient(argv.home, async (client) => {
              const { pool, name } = parseVolumeRef(argv.volume);
              const result = await client.ask<Message & { volume: { sizeBytes: number } }>(target(client, argv.node), { type: 'storage.volume-resize', pool, name, sizeBytes: argv.size }, { timeoutMs: 120_000 });
              reply(argv, result, `volume ${pool}/${name} is now ${formatBytes(result.volume.sizeBytes)}${roundedNote(argv.size, result.volume.sizeBytes)}`);
            }),
          ),
        )
        .command(
          'snapshot <action> <volume> <snapshot>',
          'create, rollback or rm a snapshot (rollback refused while a system runs on it)',
          (c) => c.positional('action', { choices: ['create', 'rollback', 'rm'] as const, demandOption: true }).positional('volume', { type: 'string', demandOption: true }).positional('snapshot', { type: 'string', demandOption: true }).option('node', nodeOption),
          (argv) =>
            run(argv, () =>
              withClient(argv.home, async (client) => {
                const { pool, name } = parseVolumeRef(argv.volume);
                const snapshot = assertName(argv.snapshot, 'snapshot');
                const result = await client.ask(target(client, argv.node), { type: 'storage.volume-snapshot', pool, name, op: argv.action, snapshot }, { timeoutMs: 120_000 });
                reply(argv, result, `volume ${pool}/${name}: snapshot ${snapshot} ${argv.action === 'create' ? 'made' : argv.action === 'rollback' ? 'rolled back to' : 'removed'}`);
              }),
            ),
        )
        .command('clone <volume> <target>', 'copy a volume as TARGET in its pool: full, or --linked (a qcow2 over it)', (c) => c.positional('volume', { type: 'string', demandOption: true }).positional('target', { type: 'string', demandOption: true }).option('linked', { type: 'boolean', default: false }).option('node', nodeOption), (argv) =>
          run(argv, () =>
            withClient(argv.home, async (client) => {
              const { pool, name } = parseVolumeRef(argv.volume);
              const targetName = argv.target.includes('/') ? parseVolumeRef(argv.target, 'target') : { pool, name: assertName(argv.target, 'volume') };
              if (targetName.pool !== pool) throw usage(`a clone stays in its pool ('${pool}'), not '${targetName.pool}'`);
              const result = await client.ask(target(client, argv.node), { type: 'storage.volume-clone', pool, name, target: targetName.name, linked: argv.linked }, { timeoutMs: 3_600_000 });
              reply(argv, result, `volume ${pool}/${targetName.name} made from ${pool}/${name}${argv.linked ? ' (linked)' : ''}`);
            }),
          ),
        )
        .command('import <volume> <file>', "make a volume of a file on the node, in an import directory (an image converted, or --format iso copied)", (c) => c.positional('volume', { type: 'string', demandOption: true }).positional('file', { type: 'string', demandOption: true }).option('format', { choices: ['qcow2', 'raw', 'iso'] as const, default: 'qcow2' as const }).option('node', nodeOption), (argv) =>
          run(argv, () =>
            withClient(argv.home, async (client) => {
              const { pool, name } = parseVolumeRef(argv.volume);
              const result = await client.ask<Message & { file: string }>(target(client, argv.node), { type: 'storage.volume-import', pool, name, file: argv.file, format: argv.format }, { timeoutMs: 3_600_000 });
              reply(argv, result, `volume ${pool}/${name} imported: ${result.file}`);
            }),
          ),
        )
        .command('rm <volume>', 'remove a volume and its files (refused while a system has it as a disk)', (c) => c.positional('volume', { type: 'string', demandOption: true }).option('node', nodeOption), (argv) =>
          run(argv, () =>
            withClient(argv.home, async (client) => {
              const { pool, name } = parseVolumeRef(argv.volume);
              const result = await client.ask(target(client, argv.node), { type: 'storage.volume-rm', pool, name }, { timeoutMs: 120_000 });
              reply(argv, result, `volume ${pool}/${name} removed`);
            }),
          ),
        )
        .demandCommand(1, 'name a volume command: create, ls, info, resize, snapshot, clone, import, rm'),
    )
    .command('device', "the nodes' block devices", (d) =>
      d
        .command('ls', 'block devices (lsblk) of every node, or of --node', (c) => c.option('node', { type: 'string', coerce: flagOnce('node', (node) => assertName(String(node), 'node')) }), (argv) =>
          run(argv, () =>
            withClient(argv.home, async (client) => {
              const rows = (await listAll(client, 'object/storage/device/'))
                .map((record) => record.value as { name: string; node: string; device?: string; path: string; sizeBytes?: number; type?: string; model?: string | null; rotational?: boolean | null; mountpoints?: string[] })
                .filter((row) => argv.node === undefined || row.node === argv.node);
              if (argv.json) {
                printJson(rows);
                return;
              }
              const lines = rows.map((row) => [row.node, row.device ?? row.name, row.type ?? '-', formatBytes(row.sizeBytes ?? 0), row.rotational === null || row.rotational === undefined ? '-' : row.rotational ? 'hdd' : 'ssd', row.model ?? '-', (row.mountpoints ?? []).join(',') || '-']);
              process.stdout.write(`${table([['NODE', 'DEVICE', 'TYPE', 'SIZE', 'ROTA', 'MODEL', 'MOUNTED'], ...lines])}\n`);
            }),
          ),
        )
        .demandCommand(1, 'name a device command: ls'),
    )
    .demandCommand(1, 'name a storage command: pool, share, volume, device');
}
