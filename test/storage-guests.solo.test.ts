/**
 * Real QEMU guests with disks made by the Storage service: the guest sees a volume at its size;
 * what one boot wrote the next reads; a snapshot rollback brings earlier data back; a resize is
 * seen after a restart; a running guest's volume grows live (QMP block_resize: the guest's kernel
 * sees the new size) and takes and drops qcow2 snapshots live; it cannot be removed or rolled back; per-disk I/O statistics reach
 * stats/system/; a missing volume refuses the start, naming it.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { guestHasDisks, guestImage, GUEST_DISK_PREFIX, GUEST_DISK_READ_PREFIX, GUEST_DISK_WROTE_PREFIX } from '../adapters/guest-image.js';
import type { RecordView } from '../actors/cdb/index.js';
import type { AcpError } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import { allRunning, client, eventually, makeHome, startDaemon } from './helpers/node.js';
import { qemuImgMissing, qemuMissing, runsWhen } from './helpers/requires.js';

const image = guestImage();
let missing = qemuMissing() ?? qemuImgMissing();
missing ??= !image ? 'the test guest is not built (npm run guest-image)' : !guestHasDisks() ? 'the test guest has no disk drivers yet (npm run guest-image rebuilds it)' : undefined;
const MiB = 1024 * 1024;

runsWhen(missing)(`a QEMU guest sees its volume at its size; data survives a reboot; a snapshot rollback restores it; a resize is seen live (also once a new daemon adopted it) and after a restart; live snapshots; rm and rollback while running are refused${missing ? ` (skipped: ${missing})` : ''}`, async (t) => {
  t.timeout(600_000);
  const home = makeHome(t, { statsMs: 1000 });
  const daemon = await startDaemon(t, home);
  await allRunning(daemon);
  let api = await client(t, home);
  const dir = mkdtempSync(join(tmpdir(), 'acp-guest-pool-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const storage = (message: Message) => api.ask<Message>('storage', message, { timeoutMs: 60_000 });
  await storage({ type: 'storage.pool-create', spec: { name: 'local', type: 'dir', path: join(dir, 'images') } });
  await eventually(async () => ((await api.ask<Message & { pools: Record<string, { state: string }> }>('storage', { type: 'storage.pool-status' })).pools['local']?.state === 'active' ? true : undefined), 15_000, 'the pool to be active');
  await storage({ type: 'storage.volume-create', pool: 'local', name: 'd1', sizeBytes: 64 * MiB });

  // A missing volume refuses the start, naming it; nothing runs.
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/nodisk', value: { name: 'nodisk', driver: 'qemu', memoryMiB: 128, disks: [{ pool: 'local', volume: 'gone' }], boot: { kernel: image!.kernel, initrd: image!.initrd } } });
  const refused = await t.throwsAsync(api.ask('hypervisor', { type: 'system.start', id: 'nodisk' }, { timeoutMs: 60_000 }));
  t.is((refused as AcpError).code, 'ACP_ERR_STORAGE_NOT_FOUND');
  t.regex(refused!.message, /system 'nodisk' cannot start on node 'n1': disk 0 \(local\/gone\): no volume 'local\/gone'/);
  // A boot disk that is not one of its disks, on a system with none: refused too (it was ignored, and QEMU booted nothing).
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/strayboot', value: { name: 'strayboot', driver: 'qemu', memoryMiB: 128, boot: { disk: 'local/d1' } } });
  const stray = await t.throwsAsync(api.ask('hypervisor', { type: 'system.start', id: 'strayboot' }, { timeoutMs: 60_000 }));
  t.regex(stray!.message, /boots from disk 'local\/d1', which is not one of its disks \(none\)/);

  // loglevel=7: the guest's kernel prints a disk's capacity change on its console.
  const cmdline = `${image!.cmdline} loglevel=7 acp.disks=1 acp.disktest=1`;
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/g1', value: { name: 'g1', driver: 'qemu', memoryMiB: 256, restart: 'never', disks: [{ pool: 'local', volume: 'd1' }], boot: { kernel: image!.kernel, initrd: image!.initrd, cmdline } } });
  const console = async () => (await api.ask<Message & { data: string }>('hypervisor', { type: 'system.console', id: 'g1', maxBytes: 1024 * 1024 })).data;
  /** One boot: the size the guest saw, the mark it found, the one it wrote. */
  const boot = async (what: string) => {
    await api.ask('hypervisor', { type: 'system.start', id: 'g1' }, { timeoutMs: 120_000 });
    const text = await eventually(async () => {
      const data = await console();
      return data.includes(GUEST_DISK_WROTE_PREFIX) ? data : undefined;
    }, 180_000, `the guest to write its mark (${what})`);
    const size = Number(new RegExp(`${GUEST_DISK_PREFIX} vda (\\d+)`).exec(text)?.[1]);
    const read = Number(new RegExp(`${GUEST_DISK_READ_PREFIX} vda (\\d+)`).exec(text)?.[1]);
    const wrote = Number(new RegExp(`${GUEST_DISK_WROTE_PREFIX} vda (\\d+)`).exec(text)?.[1]);
    return { size, read, wrote };
  };
  const stop = () => api.ask('hypervisor', { type: 'system.stop', id: 'g1', force: true }, { timeoutMs: 60_000 });

  const first = await boot('first boot');
  t.deepEqual(first, { size: 64 * MiB, read: 0, wrote: 1 }, 'the volume is seen at 64 MiB, blank');
  // While it runs: its volume cannot go, and its disk counters are in its stats.
  const inUse = await t.throwsAsync(storage({ type: 'storage.volume-rm', pool: 'local', name: 'd1' }));
  t.is((inUse as AcpError).code, 'ACP_ERR_STORAGE_IN_USE');
  t.regex(inUse!.message, /system g1 \(running on n1\) uses it/);
  const stats = await eventually(async () => {
    const record = await api.ask<Message & { record: RecordView }>('cdb', { type: 'cdb.get', key: 'stats/system/g1@n1' }).catch(() => undefined);
    const disks = (record?.record.value as { disks?: { volume: string; writeBytes: number; readBytes: number; writeOps: number }[] } | undefined)?.disks;
    return disks?.[0] && disks[0].writeOps > 0 ? disks : undefined;
  }, 60_000, 'per-disk stats in stats/system/g1@n1');
  t.like(stats[0], { volume: 'local/d1' });
  t.true(stats[0]!.readBytes > 0 && stats[0]!.writeBytes > 0);
  // It grows while the guest runs, and the guest's kernel sees the new size (80 MiB: 163840 sectors).
  const grown = await storage({ type: 'storage.volume-resize', pool: 'local', name: 'd1', sizeBytes: 80 * MiB });
  t.like(grown, { live: true, from: 64 * MiB, volume: { sizeBytes: 80 * MiB } });
  const seen = await eventually(async () => /\[vda\] new size: 163840 |vda: detected capacity change from \d+ to 163840/.exec(await console())?.[0], 30_000, 'the guest to see its disk grow');
  t.log(`guest kernel: ${seen}`);
  const shrink = await t.throwsAsync(storage({ type: 'storage.volume-resize', pool: 'local', name: 'd1', sizeBytes: 32 * MiB }));
  t.is((shrink as AcpError).code, 'ACP_ERR_STORAGE_IN_USE');
  // qcow2 snapshots taken and dropped by the running guest's QEMU; a rollback waits for a stop.
  await storage({ type: 'storage.volume-snapshot', pool: 'local', name: 'd1', op: 'create', snapshot: 'live1' });
  await storage({ type: 'storage.volume-snapshot', pool: 'local', name: 'd1', op: 'create', snapshot: 'live2' });
  await storage({ type: 'storage.volume-snapshot', pool: 'local', name: 'd1', op: 'rm', snapshot: 'live2' });
  const rollback = await t.throwsAsync(storage({ type: 'storage.volume-snapshot', pool: 'local', name: 'd1', op: 'rollback', snapshot: 'live1' }));
  t.is((rollback as AcpError).code, 'ACP_ERR_STORAGE_IN_USE');
  await stop();
  const file = join(dir, 'images', 'd1.qcow2');
  const onDisk = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', file], { encoding: 'utf8' })) as { 'virtual-size': number; snapshots?: { name: string }[] };
  t.is(onDisk['virtual-size'], 80 * MiB);
  t.deepEqual(onDisk.snapshots?.map((entry) => entry.name), ['live1'], 'the live snapshot is in the image; the dropped one is gone');
  await storage({ type: 'storage.volume-snapshot', pool: 'local', name: 'd1', op: 'rm', snapshot: 'live1' });

  await storage({ type: 'storage.volume-snapshot', pool: 'local', name: 'd1', op: 'create', snapshot: 's1' });
  t.deepEqual(await boot('second boot'), { size: 80 * MiB, read: 1, wrote: 2 }, 'what the first boot wrote is read by the second');
  await stop();

  await storage({ type: 'storage.volume-snapshot', pool: 'local', name: 'd1', op: 'rollback', snapshot: 's1' });
  await storage({ type: 'storage.volume-resize', pool: 'local', name: 'd1', sizeBytes: 96 * MiB });
  t.deepEqual(await boot('after rollback and resize'), { size: 96 * MiB, read: 1, wrote: 2 }, 'the rollback brought back the first boot’s mark; the guest sees 96 MiB');

  // A new daemon adopts the running guest with its disks: it still grows live (112 MiB: 229376 sectors).
  await daemon.stop('restart: the guest stays');
  await allRunning(await startDaemon(t, home));
  api = await client(t, home);
  await eventually(async () => ((await api.ask<Message & { systems: { state: string }[] }>('hypervisor', { type: 'system.status', id: 'g1' })).systems[0]?.state === 'running' ? true : undefined), 60_000, 'g1 adopted by the new daemon');
  t.like(await storage({ type: 'storage.volume-resize', pool: 'local', name: 'd1', sizeBytes: 112 * MiB }), { live: true });
  await eventually(async () => /\[vda\] new size: 229376 |vda: detected capacity change from \d+ to 229376/.exec(await console())?.[0], 30_000, 'the adopted guest to see its disk grow');
  await stop();
});
