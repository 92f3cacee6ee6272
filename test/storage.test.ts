/**
 * The Storage service on one daemon: a dir pool in a temporary directory, its meta and stats,
 * volumes made with qemu-img (create, info, resize, snapshots, clones, rm), the refusals (a volume
 * in use, a pool with volumes, lvm-thin without device-mapper, nfs without a kernel client), and
 * the pure parts (paths never leave their pool, volume keys).
 */
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { inside, snapshotPath, volumeLayout } from '../actors/storage/layout.js';
import { deviceId } from '../actors/storage/devices.js';
import { parseKey, systemPathProblem, validateObject } from '../actors/model.js';
import { homeLayout, homePathProblem } from '../actors/storage/pools.js';
import { homePaths } from '../runtime/config.js';
import type { RecordView } from '../actors/cdb/index.js';
import { AcpError, type ErrorCode } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import { eventually } from './helpers/node.js';
import { qemuImgMissing, runsWhen } from './helpers/requires.js';
import { systemNode } from './helpers/system.js';
import { parseSize } from '../cli/flags.js';

const hasQemuImg = qemuImgMissing();

test('a volume path never leaves its pool: names are checked, and every path stays inside the root', (t) => {
  const pool = { name: 'p', type: 'dir' as const };
  t.is(volumeLayout(pool, '/srv/p', { name: 'd1', format: 'qcow2' }).file, '/srv/p/d1.qcow2');
  const btrfs = volumeLayout({ name: 'b', type: 'btrfs' }, '/srv/b', { name: 'd1', format: 'raw' });
  t.deepEqual(btrfs, { subvolume: '/srv/b/d1', file: '/srv/b/d1/disk.raw', snapshots: '/srv/b/.snapshots/d1' });
  t.is(snapshotPath(btrfs, 's1'), '/srv/b/.snapshots/d1/s1');
  for (const name of ['..', '../etc', 'a/b', '.hidden', '', 'A', 'x'.repeat(64)]) {
    const error = t.throws(() => volumeLayout(pool, '/srv/p', { name, format: 'qcow2' }));
    t.is((error as AcpError).code, 'ACP_ERR_NAME_INVALID', name);
  }
  t.throws(() => snapshotPath(btrfs, '../../etc'), { message: /snapshot name/ });
  t.true(inside('/srv/p', '/srv/p/a'));
  t.false(inside('/srv/p', '/srv/p'));
  t.false(inside('/srv/p', '/srv/pa/b'));
  t.false(inside('/srv/p', '/srv/p/../q'));
});

test('--size: binary units; zero is too small and a size past 2^53 bytes says it is too large, not too small', (t) => {
  t.is(parseSize('64M'), 64 * 1024 ** 2);
  t.is(parseSize('1.5G'), 1.5 * 1024 ** 3);
  t.is(parseSize('4096'), 4096);
  const usage = (text: string) => t.throws(() => parseSize(text), { instanceOf: AcpError })!;
  t.is(usage('0').code, 'ACP_ERR_CLI_USAGE');
  t.regex(usage('0').message, /at least 1 byte/);
  const huge = usage('99999T');
  t.is(huge.code, 'ACP_ERR_CLI_USAGE');
  t.regex(huge.message, /--size 99999T: too large; the most is 8191T/);
  t.regex(usage('abc').message, /give a size like 64M/);
});

test('volume keys are <pool>/<name>, both names; pool and share paths must be absolute and normalized', (t) => {
  t.like(parseKey('object/storage/volume/local/d1'), { type: 'storage/volume', id: 'local/d1' });
  t.like(parseKey('meta/storage/volume/local/d1@n1'), { id: 'local/d1', node: 'n1' });
  for (const bad of ['object/storage/volume/d1', 'object/storage/volume/local/../d1', 'object/storage/volume/local/a/b', 'object/storage/volume/local/.x']) {
    t.throws(() => parseKey(bad), { message: /a volume's id is <pool>\/<name>/ }, bad);
  }
  const key = parseKey('object/storage/pool/p');
  for (const path of ['relative', '/a/../b', '/a/./b', '/a//b', '/a/', '/a,b', '/']) {
    t.throws(() => validateObject(key, { name: 'p', type: 'dir', path }), { code: 'ACP_ERR_CDB_BAD_VALUE' } as never, path);
  }
  t.throws(() => validateObject(key, { name: 'p', type: 'dir' }), { message: /give a pool a path, or a share/ });
  t.like(validateObject(key, { name: 'p', type: 'dir', path: '/var/lib/acp/images' }), { content: ['images'], shared: false });
  // The daemon is root: a new pool or mount point in the host's own directories would make, overwrite or hide system files.
  for (const path of ['/etc', '/etc/acp', '/root', '/usr/local/images', '/proc/self', '/var', '/tmp', '/boot/x', '/run/acp']) {
    t.regex(systemPathProblem(path) ?? '', /a directory of the host's own system|a system directory itself/, path);
  }
  for (const path of ['/root/images', '/tmp/pools/a', '/srv', '/srv/acp', '/mnt', '/mnt/nas', '/home/ops/vm-images', '/var/lib/acp/images']) t.is(systemPathProblem(path), undefined, path);
  const layout = homeLayout(homePaths('/srv/acp'), '/srv/acp/import');
  t.regex(homePathProblem('/srv', layout) ?? '', /^\/srv holds this node's home \(\/srv\/acp\)/);
  t.regex(homePathProblem('/srv/acp/run/x', layout) ?? '', /inside \/srv\/acp\/run, where the node keeps its own files/);
  t.regex(homePathProblem('/srv/acp/import', layout) ?? '', /is \/srv\/acp\/import, where the node keeps its own files/);
  t.regex(homePathProblem('/srv/acp/shares', layout) ?? '', /holds the default mount points of this node's shares/);
  for (const path of ['/srv/acp/shares/nas', '/srv/acp/images', '/srv/acp/secrets2', '/srv/acpx', '/srv/other']) t.is(homePathProblem(path, layout), undefined, path);
  // Checked at create, not in the stored schema: a pool stored before the rule is still read.
  t.like(validateObject(key, { name: 'p', type: 'dir', path: '/usr/local/images' }), { path: '/usr/local/images' });
  t.is(deviceId('n1', 'nvme0n1p1'), 'n1-nvme0n1p1');
  t.is(deviceId('n1', 'dm-0:X'), 'n1-dm-0-x');
});

runsWhen(hasQemuImg)(`a dir pool: active with stats; volumes made, resized, snapshotted, cloned and removed with qemu-img; in-use and bad requests refused${hasQemuImg ? ` (skipped: ${hasQemuImg})` : ''}`, async (t) => {
  t.timeout(120_000);
  const { api, home } = await systemNode(t);
  const dir = mkdtempSync(join(tmpdir(), 'acp-pool-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const root = join(dir, 'images');
  const get = async (key: string) => (await api.ask<Message & { record: RecordView }>('cdb', { type: 'cdb.get', key })).record.value;
  const refused = async (message: Message, code: ErrorCode, pattern: RegExp) => {
    const error = await t.throwsAsync(api.ask('storage', message, { timeoutMs: 60_000 }));
    t.is((error as AcpError).code, code, error?.message);
    t.regex(error!.message, pattern);
  };

  await refused({ type: 'storage.pool-create', spec: { name: 'etc', type: 'dir', path: '/etc/acp-pool' } }, 'ACP_ERR_STORAGE_BAD_PATH', /field 'path': a pool is a directory of its own: \/etc\/acp-pool is inside \/etc, a directory of the host's own system/);
  await refused({ type: 'storage.share-create', spec: { name: 'nas', type: 'sshfs', server: 'h', path: '/x', mountpoint: '/usr/nas' } }, 'ACP_ERR_STORAGE_BAD_PATH', /field 'mountpoint': a share is mounted on a directory of its own: \/usr\/nas is inside \/usr/);
  t.false(existsSync('/etc/acp-pool'));
  // Nor over the node's own home, or in what it keeps there: a mount on its secrets would hide its keys.
  await refused({ type: 'storage.share-create', spec: { name: 'nas', type: 'sshfs', server: 'h', path: '/x', mountpoint: join(home, 'secrets') } }, 'ACP_ERR_STORAGE_BAD_PATH', /is .*secrets, where the node keeps its own files/);
  await refused({ type: 'storage.pool-create', spec: { name: 'inhome', type: 'dir', path: join(home, 'data', 'images') } }, 'ACP_ERR_STORAGE_BAD_PATH', /is inside .*data, where the node keeps its own files/);
  await refused({ type: 'storage.pool-create', spec: { name: 'athome', type: 'dir', path: home } }, 'ACP_ERR_STORAGE_BAD_PATH', /is this node's home/);
  t.false(existsSync(join(home, 'data', 'images')));
  // A pool written straight into the CDB (or created on a node with another home) is checked again by each node that carries it.
  await api.ask('cdb', { type: 'cdb.put', key: 'object/storage/pool/stored', value: { name: 'stored', type: 'dir', path: join(home, 'log', 'pool') } });
  const stored = await eventually(async () => {
    const value = (await get('meta/storage/pool/stored@n1').catch(() => undefined)) as { state?: string; reason?: string } | undefined;
    return value?.state === 'error' ? value : undefined;
  }, 10_000, 'the stored pool to be in error');
  t.regex(stored.reason ?? '', /not used on this node: .*log\/pool is inside .*log, where the node keeps its own files/);
  t.false(existsSync(join(home, 'log', 'pool')), 'its directory was made');
  await api.ask('cdb', { type: 'cdb.delete', key: 'object/storage/pool/stored' });
  await api.ask('cdb', { type: 'cdb.put', key: 'object/storage/share/over', value: { name: 'over', type: 'sshfs', server: 'h', path: '/x', mountpoint: join(home, 'secrets'), nodes: ['n1'] } });
  const over = await eventually(async () => {
    const value = (await get('meta/storage/share/over@n1').catch(() => undefined)) as { state?: string; reason?: string } | undefined;
    return value?.state === 'error' ? value : undefined;
  }, 10_000, 'the stored share to be in error');
  t.regex(over.reason ?? '', /share 'over' is not mounted on this node: .*secrets, where the node keeps its own files/);
  await api.ask('cdb', { type: 'cdb.delete', key: 'object/storage/share/over' });
  await api.ask('storage', { type: 'storage.pool-create', spec: { name: 'local', type: 'dir', path: root } });
  t.true(existsSync(root), 'the pool directory is made');
  const meta = await eventually(async () => {
    const value = (await get('meta/storage/pool/local@n1').catch(() => undefined)) as { state?: string } | undefined;
    return value?.state === 'active' ? value : undefined;
  }, 10_000, 'the pool to be active');
  t.like(meta, { type: 'dir', path: root, shared: false });
  const stats = await eventually(() => get('stats/storage/pool/local@n1').catch(() => undefined), 10_000, 'pool stats') as { total: number; used: number; available: number };
  t.true(stats.total > 0 && stats.used >= 0 && stats.available > 0 && stats.available <= stats.total);
  await refused({ type: 'storage.pool-create', spec: { name: 'local', type: 'dir', path: root } }, 'ACP_ERR_STORAGE_EXISTS', /exists already/);

  // lvm-thin: refused, naming why (no device-mapper here; where there is one, no LVM adapter yet).
  const dm = readFileSync('/proc/misc', 'utf8').includes('device-mapper');
  await refused({ type: 'storage.pool-create', spec: { name: 'thin', type: 'lvm-thin', path: '/dev/vg0' } }, 'ACP_ERR_STORAGE_UNSUPPORTED', dm ? /no lvcreate adapter/ : /device-mapper.*use a dir or btrfs pool/);
  // NFS where the kernel has no client: refused, naming what is missing.
  if (!readFileSync('/proc/filesystems', 'utf8').includes('\tnfs\n')) {
    await refused({ type: 'storage.share-create', spec: { name: 'files', type: 'nfs', server: '10.0.0.1', path: '/export' } }, 'ACP_ERR_STORAGE_UNSUPPORTED', /no NFS client/);
  }

  const created = await api.ask<Message & { file: string }>('storage', { type: 'storage.volume-create', pool: 'local', name: 'd1', sizeBytes: 64 * 1024 * 1024 });
  t.is(created.file, join(root, 'd1.qcow2'));
  const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', created.file], { encoding: 'utf8' })) as { format: string; 'virtual-size': number };
  t.is(info.format, 'qcow2');
  t.is(info['virtual-size'], 64 * 1024 * 1024);
  t.like(await get('object/storage/volume/local/d1'), { name: 'd1', pool: 'local', sizeBytes: 64 * 1024 * 1024, format: 'qcow2', node: 'n1' });
  await refused({ type: 'storage.volume-create', pool: 'local', name: 'd1', sizeBytes: 1024 * 1024 }, 'ACP_ERR_STORAGE_EXISTS', /exists already/);
  await refused({ type: 'storage.volume-create', pool: 'nope', name: 'd2', sizeBytes: 1024 * 1024 }, 'ACP_ERR_STORAGE_NOT_FOUND', /no pool 'nope'/);
  await refused({ type: 'storage.volume-create', pool: 'local', name: '../evil', sizeBytes: 1024 * 1024 }, 'ACP_ERR_SCHEMA_REJECTED', /name/);

  const described = await api.ask<Message & { info: { virtualSize: number; format: string; backingChain: string[] } }>('storage', { type: 'storage.volume-info', pool: 'local', name: 'd1' });
  t.like(described.info, { virtualSize: 64 * 1024 * 1024, format: 'qcow2', backingChain: [] });

  await api.ask('storage', { type: 'storage.volume-resize', pool: 'local', name: 'd1', sizeBytes: 96 * 1024 * 1024 });
  t.like(await get('object/storage/volume/local/d1'), { sizeBytes: 96 * 1024 * 1024 });
  await api.ask('storage', { type: 'storage.volume-snapshot', pool: 'local', name: 'd1', op: 'create', snapshot: 's1' });
  t.regex(execFileSync('qemu-img', ['snapshot', '-l', '-U', created.file], { encoding: 'utf8' }), /\bs1\b/);
  await refused({ type: 'storage.volume-snapshot', pool: 'local', name: 'd1', op: 'rollback', snapshot: 'nope' }, 'ACP_ERR_STORAGE_NOT_FOUND', /has no snapshot 'nope' \(it has s1\)/);

  // A linked clone reads through to its base: the base cannot be removed while it exists.
  await api.ask('storage', { type: 'storage.volume-clone', pool: 'local', name: 'd1', target: 'c1', linked: true });
  const clone = await api.ask<Message & { info: { backingChain: string[] } }>('storage', { type: 'storage.volume-info', pool: 'local', name: 'c1' });
  t.deepEqual(clone.info.backingChain, [created.file]);
  await refused({ type: 'storage.volume-rm', pool: 'local', name: 'd1' }, 'ACP_ERR_STORAGE_IN_USE', /linked clones local\/c1/);
  await refused({ type: 'storage.volume-snapshot', pool: 'local', name: 'd1', op: 'rollback', snapshot: 's1' }, 'ACP_ERR_STORAGE_IN_USE', /cannot roll back .*linked clones local\/c1/);
  // A rollback brings back the size the volume had when the snapshot was taken.
  await api.ask('storage', { type: 'storage.volume-create', pool: 'local', name: 'r1', sizeBytes: 16 * 1024 * 1024 });
  await api.ask('storage', { type: 'storage.volume-snapshot', pool: 'local', name: 'r1', op: 'create', snapshot: 's1' });
  await api.ask('storage', { type: 'storage.volume-resize', pool: 'local', name: 'r1', sizeBytes: 48 * 1024 * 1024 });
  await api.ask('storage', { type: 'storage.volume-snapshot', pool: 'local', name: 'r1', op: 'rollback', snapshot: 's1' });
  t.like(await get('object/storage/volume/local/r1'), { sizeBytes: 16 * 1024 * 1024 });
  await api.ask('storage', { type: 'storage.volume-rm', pool: 'local', name: 'r1' });
  await api.ask('storage', { type: 'storage.volume-clone', pool: 'local', name: 'd1', target: 'f1', linked: false });
  t.deepEqual((await api.ask<Message & { info: { backingChain: string[] } }>('storage', { type: 'storage.volume-info', pool: 'local', name: 'f1' })).info.backingChain, []);

  // In use by a running system: rm and rollback refused, naming it; attached but stopped: rm says detach.
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/vm1', value: { name: 'vm1', driver: 'sim', disks: [{ pool: 'local', volume: 'f1' }] } });
  await api.ask('hypervisor', { type: 'system.start', id: 'vm1' });
  await refused({ type: 'storage.volume-rm', pool: 'local', name: 'f1' }, 'ACP_ERR_STORAGE_IN_USE', /system vm1 \(running on n1\) uses it/);
  // Detached while it runs (that takes effect at its next start): its guest still holds the volume.
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/vm1', value: { name: 'vm1', driver: 'sim' } });
  await refused({ type: 'storage.volume-rm', pool: 'local', name: 'f1' }, 'ACP_ERR_STORAGE_IN_USE', /system vm1 \(running on n1\) uses it/);
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/vm1', value: { name: 'vm1', driver: 'sim', disks: [{ pool: 'local', volume: 'f1' }] } });
  // While it runs a disk only grows, and only in a QEMU guest (storage-guests.solo.test.ts grows one live); a sim guest has no disk to grow.
  await refused({ type: 'storage.volume-resize', pool: 'local', name: 'f1', sizeBytes: 1024 * 1024 }, 'ACP_ERR_STORAGE_IN_USE', /cannot shrink .* while system vm1 \(running on n1\) uses it/);
  await refused({ type: 'storage.volume-resize', pool: 'local', name: 'f1', sizeBytes: 200 * 1024 * 1024 }, 'ACP_ERR_SYSTEM_BAD_STATE', /no disks in this VMM \(a simulated guest/);
  await api.ask('hypervisor', { type: 'system.stop', id: 'vm1' });
  await refused({ type: 'storage.volume-rm', pool: 'local', name: 'f1' }, 'ACP_ERR_STORAGE_IN_USE', /is a disk of vm1; detach it first/);
  await api.ask('cdb', { type: 'cdb.delete', key: 'object/system/vm1' });

  // Import takes files from the node's import directories only, links followed: the daemon is root.
  mkdirSync(join(home, 'import'), { recursive: true });
  execFileSync('qemu-img', ['create', '-q', '-f', 'raw', join(home, 'import', 'disk.raw'), '1M']);
  const imported = await api.ask<Message & { volume: { sizeBytes: number; format: string } }>('storage', { type: 'storage.volume-import', pool: 'local', name: 'i1', file: join(home, 'import', 'disk.raw') }, { timeoutMs: 60_000 });
  t.like(imported.volume, { sizeBytes: 1024 * 1024, format: 'qcow2' });
  await refused({ type: 'storage.volume-import', pool: 'local', name: 'i2', file: '/etc/passwd', format: 'raw' }, 'ACP_ERR_STORAGE_BAD_PATH', /not in an import directory .*copy the image into/);
  symlinkSync('/etc/passwd', join(home, 'import', 'sneaky.raw'));
  await refused({ type: 'storage.volume-import', pool: 'local', name: 'i2', file: join(home, 'import', 'sneaky.raw'), format: 'raw' }, 'ACP_ERR_STORAGE_BAD_PATH', /not in an import directory/);
  await api.ask('storage', { type: 'storage.volume-rm', pool: 'local', name: 'i1' });
  // Images that name other files are refused: the daemon (root) would read those into the volume.
  writeFileSync(join(dir, 'outside.raw'), Buffer.alloc(65536, 1));
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${join(dir, 'outside.raw')}`, join(home, 'import', 'split.qcow2'), '64K']);
  await refused({ type: 'storage.volume-import', pool: 'local', name: 'i3', file: join(home, 'import', 'split.qcow2') }, 'ACP_ERR_STORAGE_BAD_PATH', /split\.qcow2 keeps its data in another file \(.*outside\.raw\); import a standalone image/);
  execFileSync('qemu-img', ['create', '-q', '-f', 'vmdk', join(home, 'import', 'disk.vmdk'), '1M']);
  await refused({ type: 'storage.volume-import', pool: 'local', name: 'i4', file: join(home, 'import', 'disk.vmdk') }, 'ACP_ERR_STORAGE_BAD_PATH', /disk\.vmdk is a vmdk image: import raw, qcow2, vdi, vpc, vhdx \(qemu-img convert -O qcow2 it first\)/);
  t.deepEqual(readdirSync(root).filter((name) => name.endsWith('.import') || name.startsWith('i3') || name.startsWith('i4')), [], 'nothing left of the refused imports');
  // An ISO is copied as it is, into a pool that holds ISOs.
  await refused({ type: 'storage.pool-create', spec: { name: 'isos', type: 'dir', path: join(root, 'isos'), content: ['iso'] } }, 'ACP_ERR_STORAGE_EXISTS', /pool 'local' is at .*which overlaps .*isos: a directory holds one pool's volumes/);
  await refused({ type: 'storage.pool-create', spec: { name: 'isos', type: 'dir', path: root, content: ['iso'] } }, 'ACP_ERR_STORAGE_EXISTS', /the same directory/);
  await api.ask('storage', { type: 'storage.pool-create', spec: { name: 'isos', type: 'dir', path: `${root}-isos`, content: ['iso'] } });
  writeFileSync(join(home, 'import', 'tiny.iso'), Buffer.alloc(4096, 7));
  const iso = await api.ask<Message & { file: string; volume: { format: string } }>('storage', { type: 'storage.volume-import', pool: 'isos', name: 'cd1', file: join(home, 'import', 'tiny.iso'), format: 'iso' }, { timeoutMs: 60_000 });
  t.is(iso.volume.format, 'iso');
  t.deepEqual(readFileSync(iso.file), Buffer.alloc(4096, 7));
  // What an ISO or a pool's content list cannot do is a bad request naming what fits (a 400 on the web, not a failure of the node).
  const wrong = 'ACP_ERR_STORAGE_WRONG_FORMAT';
  await refused({ type: 'storage.volume-resize', pool: 'isos', name: 'cd1', sizeBytes: 8192 }, wrong, /is an ISO image; it has no size to change/);
  await refused({ type: 'storage.volume-snapshot', pool: 'isos', name: 'cd1', op: 'create', snapshot: 's1' }, wrong, /is an ISO image; it has no snapshots/);
  await refused({ type: 'storage.volume-clone', pool: 'isos', name: 'cd1', target: 'cd2' }, wrong, /is an ISO image; import it again under another name instead/);
  await refused({ type: 'storage.volume-import', pool: 'local', name: 'cd3', file: join(home, 'import', 'tiny.iso'), format: 'iso' }, wrong, /pool 'local' holds images, not iso \(its content list\); use a pool that holds iso/);
  await api.ask('storage', { type: 'storage.volume-create', pool: 'local', name: 'flat', sizeBytes: 1024 * 1024, format: 'raw' });
  await refused({ type: 'storage.volume-snapshot', pool: 'local', name: 'flat', op: 'create', snapshot: 's1' }, wrong, /is raw on a dir pool: snapshots need qcow2 or a btrfs pool/);
  await api.ask('storage', { type: 'storage.volume-rm', pool: 'local', name: 'flat' });
  await api.ask('storage', { type: 'storage.volume-rm', pool: 'isos', name: 'cd1' });
  // Only regular files: reading a FIFO would wait forever, and four such reads held every thread
  // of libuv's pool, so the store's commits stopped (a put waited until someone wrote to the FIFO).
  execFileSync('mkfifo', [join(home, 'import', 'pipe')]);
  mkdirSync(join(home, 'import', 'folder'));
  for (let attempt = 0; attempt < 5; attempt += 1) {
    await refused({ type: 'storage.volume-import', pool: 'isos', name: `p${attempt}`, file: join(home, 'import', 'pipe'), format: 'iso' }, 'ACP_ERR_STORAGE_BAD_PATH', /pipe is a FIFO, not a regular file: import an image file/);
    await refused({ type: 'storage.volume-import', pool: 'local', name: `p${attempt}`, file: join(home, 'import', 'pipe'), format: 'qcow2' }, 'ACP_ERR_STORAGE_BAD_PATH', /pipe is a FIFO, not a regular file/);
  }
  await refused({ type: 'storage.volume-import', pool: 'isos', name: 'p9', file: join(home, 'import', 'folder'), format: 'iso' }, 'ACP_ERR_STORAGE_BAD_PATH', /folder is a directory, not a regular file/);
  await api.ask('storage', { type: 'storage.pool-rm', name: 'isos' });
  t.is(await get('object/storage/volume/isos/p0').catch((error: unknown) => (error as AcpError).code), 'ACP_ERR_CDB_NOT_FOUND');
  // The store still commits.
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/after-fifo', value: { name: 'after-fifo', driver: 'sim' } }, { timeoutMs: 5000 });
  await api.ask('cdb', { type: 'cdb.delete', key: 'object/system/after-fifo' });

  await refused({ type: 'storage.pool-rm', name: 'local' }, 'ACP_ERR_STORAGE_IN_USE', /still has 3 volumes/);
  for (const name of ['c1', 'f1', 'd1']) await api.ask('storage', { type: 'storage.volume-rm', pool: 'local', name });
  t.false(existsSync(created.file));
  await refused({ type: 'storage.volume-rm', pool: 'local', name: 'd1' }, 'ACP_ERR_STORAGE_NOT_FOUND', /no volume 'local\/d1'/);
  await api.ask('storage', { type: 'storage.pool-rm', name: 'local' });
  await eventually(async () => ((await get('meta/storage/pool/local@n1').catch(() => undefined)) === undefined ? true : undefined), 10_000, 'the pool meta to go');
  t.true(existsSync(root), "a removed pool's directory stays");
});

test('block devices are published as object/storage/device/<node>-<name>', async (t) => {
  const { api } = await systemNode(t);
  const reply = await api.ask<Message & { devices: { name: string; node: string; sizeBytes: number; type: string }[] }>('storage', { type: 'storage.devices' }).catch((error: unknown) => error as AcpError);
  if (reply instanceof AcpError) {
    t.is(reply.code, 'ACP_ERR_STORAGE_TOOL_MISSING');
    return;
  }
  t.true(reply.devices.length > 0, 'lsblk found devices');
  // Not a loop device: other tests attach and detach those meanwhile (the service looks again every 30 s).
  const first = reply.devices.find((device) => !device.name.startsWith('n1-loop')) ?? reply.devices[0]!;
  t.regex(first.name, /^n1-/);
  const stored = await eventually(async () => (await api.ask<Message & { record: RecordView }>('cdb', { type: 'cdb.get', key: `object/storage/device/${first.name}` }).catch(() => undefined))?.record.value, 10_000, 'the device object');
  t.like(stored, { name: first.name, node: 'n1', type: first.type, sizeBytes: first.sizeBytes });
});

const btrfsMissing = (() => {
  if (hasQemuImg) return hasQemuImg;
  if (process.getuid?.() !== 0) return 'root (to mount a loop file)';
  try {
    execFileSync('mkfs.btrfs', ['--version'], { stdio: 'ignore' });
  } catch {
    return 'mkfs.btrfs (apt-get install btrfs-progs)';
  }
  return readFileSync('/proc/filesystems', 'utf8').includes('btrfs') ? undefined : 'a kernel with btrfs';
})();

runsWhen(btrfsMissing)(`a btrfs pool on a loop file: volumes are subvolumes, snapshots are subvolume snapshots, a rollback brings the data back, a full clone is a snapshot${btrfsMissing ? ` (skipped: ${btrfsMissing})` : ''}`, async (t) => {
  t.timeout(120_000);
  const { api } = await systemNode(t);
  const dir = mkdtempSync(join(tmpdir(), 'acp-btrfs-'));
  const file = join(dir, 'fs.img');
  const mnt = join(dir, 'mnt');
  execFileSync('truncate', ['-s', '256M', file]);
  execFileSync('mkfs.btrfs', ['-q', file]);
  execFileSync('mkdir', ['-p', mnt]);
  execFileSync('mount', ['-o', 'loop', file, mnt]);
  t.teardown(() => {
    try {
      execFileSync('umount', [mnt]);
    } catch {
      execFileSync('umount', ['-l', mnt]);
    }
    rmSync(dir, { recursive: true, force: true });
  });
  const root = join(mnt, 'pool');
  const storage = (message: Message) => api.ask<Message & { file?: string }>('storage', message, { timeoutMs: 60_000 });
  // A dir of another filesystem is refused as a btrfs pool, saying so.
  await storage({ type: 'storage.pool-create', spec: { name: 'notbtrfs', type: 'btrfs', path: join(dir, 'plain') } });
  const wrong = await eventually(async () => {
    const status = await api.ask<Message & { pools: Record<string, { state: string; reason?: string }> }>('storage', { type: 'storage.pool-status', name: 'notbtrfs' });
    return status.pools['notbtrfs']?.state === 'error' ? status.pools['notbtrfs'] : undefined;
  }, 10_000, 'the non-btrfs pool to be in error');
  t.regex(wrong.reason!, /is not on a btrfs filesystem/);
  await storage({ type: 'storage.pool-rm', name: 'notbtrfs' });

  await storage({ type: 'storage.pool-create', spec: { name: 'fast', type: 'btrfs', path: root } });
  await eventually(async () => ((await api.ask<Message & { pools: Record<string, { state: string }> }>('storage', { type: 'storage.pool-status', name: 'fast' })).pools['fast']?.state === 'active' ? true : undefined), 10_000, 'the btrfs pool to be active');
  const created = await storage({ type: 'storage.volume-create', pool: 'fast', name: 'd1', sizeBytes: 16 * 1024 * 1024, format: 'raw' });
  t.is(created.file, join(root, 'd1', 'disk.raw'));
  t.regex(execFileSync('btrfs', ['subvolume', 'show', join(root, 'd1')], { encoding: 'utf8' }), /Name:\s+d1/);
  const write = (text: string) => {
    const fd = openSync(created.file!, 'r+');
    writeSync(fd, Buffer.from(text.padEnd(16)), 0, 16, 0);
    closeSync(fd);
  };
  const read = () => readFileSync(created.file!).subarray(0, 16).toString().trim();
  write('first');
  await storage({ type: 'storage.volume-snapshot', pool: 'fast', name: 'd1', op: 'create', snapshot: 's1' });
  t.regex(execFileSync('btrfs', ['subvolume', 'show', join(root, '.snapshots', 'd1', 's1')], { encoding: 'utf8' }), /Flags:\s+readonly/);
  write('second');
  t.is(read(), 'second');
  await storage({ type: 'storage.volume-snapshot', pool: 'fast', name: 'd1', op: 'rollback', snapshot: 's1' });
  t.is(read(), 'first', 'the rollback brought back the data of the snapshot');
  await storage({ type: 'storage.volume-clone', pool: 'fast', name: 'd1', target: 'c1', linked: false });
  t.is(readFileSync(join(root, 'c1', 'disk.raw')).subarray(0, 16).toString().trim(), 'first');
  t.regex(execFileSync('btrfs', ['subvolume', 'list', mnt], { encoding: 'utf8' }), /pool\/c1/);
  const stats = await eventually(async () => (await api.ask<Message & { record: RecordView }>('cdb', { type: 'cdb.get', key: 'stats/storage/pool/fast@n1' }).catch(() => undefined))?.record.value as { total: number; volumes: number } | undefined, 10_000, 'btrfs pool stats');
  t.true(stats.total > 100 * 1024 * 1024);
  for (const name of ['c1', 'd1']) await storage({ type: 'storage.volume-rm', pool: 'fast', name });
  t.false(execFileSync('btrfs', ['subvolume', 'list', mnt], { encoding: 'utf8' }).includes('pool/d1'), 'the subvolume and its snapshots are gone');
  t.false(existsSync(join(root, '.snapshots', 'd1')));
  await storage({ type: 'storage.pool-rm', name: 'fast' });
});
