/**
 * `npm run bench -- storage`, each beside its baseline in the same run:
 * 1. Pool stats for 1,000 volumes: the Storage service's collection (statfs, then each volume's
 *    file located through its pool's layout and its allocated bytes read) against a bare loop of
 *    the same statfs and stat calls on the same files.
 * 2. Sequential writes inside a QEMU guest (TCG here, KVM where it works) to a qcow2 volume, 64 MiB
 *    of zeros with dd, timed by the guest's clock, against `qemu-img bench -w` on the host writing
 *    the same amount to a qcow2 of the same size in the same pool (skipped without QEMU or a guest
 *    image that has acp.ddbench).
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { stat, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { capacity } from '../adapters/storage/fs.js';
import { benchImage, createImage } from '../adapters/storage/qemu-img.js';
import { diskArgs } from '../adapters/drivers/disks.js';
import { guestImage, guestImageDir, GUEST_DDBENCH_PREFIX } from '../adapters/guest-image.js';
import { probeAccelerator } from '../adapters/drivers/accelerator.js';
import { QEMU_BINARY } from '../adapters/drivers/qemu-args.js';
import { GUEST_READY_LINE } from '../adapters/guest-image.js';
import { homedir } from 'node:os';
import { storagePoolSchema, storageVolumeSchema } from '../actors/model.js';
import { volumeLayout } from '../actors/storage/layout.js';
import { poolStats } from '../actors/storage/stats.js';

const VOLUMES = 1000;
const ROUNDS = 20;
const DD_MIB = 64;

async function statsBench(dir: string): Promise<string> {
  const pool = storagePoolSchema.parse({ name: 'bench', type: 'dir', path: dir });
  const volumes = Array.from({ length: VOLUMES }, (_, index) => storageVolumeSchema.parse({ name: `v${index}`, pool: 'bench', sizeBytes: 1024 * 1024 }));
  for (const volume of volumes) writeFileSync(volumeLayout(pool, dir, volume).file, Buffer.alloc(4096, 1));
  const time = async (body: () => Promise<unknown>) => {
    await body();
    const start = process.hrtime.bigint();
    for (let round = 0; round < ROUNDS; round += 1) await body();
    return Number(process.hrtime.bigint() - start) / 1e6 / ROUNDS;
  };
  const files = volumes.map((volume) => join(dir, `${volume.name}.qcow2`));
  const acp = await time(async () => poolStats(pool, await capacity(dir), dir, volumes));
  const bare = await time(async () => {
    await statfs(dir);
    let total = 0;
    for (const file of files) total += (await stat(file)).blocks * 512;
    return total;
  });
  return `pool stats for ${VOLUMES} volumes: ${acp.toFixed(1)} ms per collection — ${(bare / acp).toFixed(2)}× the speed of a bare statfs + stat loop over the same files (${bare.toFixed(1)} ms)`;
}

function hasDdBench(): boolean {
  try {
    execFileSync(QEMU_BINARY, ['--version'], { stdio: 'ignore' });
    execFileSync('qemu-img', ['--version'], { stdio: 'ignore' });
  } catch {
    return false;
  }
  const image = guestImage();
  if (!image) return false;
  // The init script is in the initramfs, gzipped: look for the feature's console prefix there.
  const initrd = execFileSync('sh', ['-c', 'gzip -dc "$1" | grep -c "$2" || true', 'probe', image.initrd, GUEST_DDBENCH_PREFIX], { encoding: 'utf8' });
  return Number(initrd.trim()) > 0;
}

/** Boots the test guest with a volume and acp.ddbench: MiB/s by the guest's clock. */
async function guestWrite(dir: string): Promise<number> {
  const image = guestImage()!;
  const file = join(dir, 'guest.qcow2');
  await createImage(file, 'qcow2', (DD_MIB + 16) * 1024 * 1024);
  const consoleLog = join(dir, 'console.log');
  // KVM only where a guest really runs under it (the hypervisor's probe, cached per host).
  const { accelerator } = await probeAccelerator(image, GUEST_READY_LINE, join(homedir(), '.cache', 'acp', 'accelerator.json'));
  let failed: string | undefined;
  const child = spawn(
    QEMU_BINARY,
    ['-machine', `pc,accel=${accelerator}`, '-m', '256', '-nodefaults', '-no-user-config', '-display', 'none', '-chardev', `file,id=console,path=${consoleLog}`, '-serial', 'chardev:console', '-kernel', image.kernel, '-initrd', image.initrd, '-append', `${image.cmdline} acp.disks=1 acp.ddbench=${DD_MIB}`, ...diskArgs([{ file, format: 'qcow2', bus: 'virtio', volume: 'bench/guest', cache: 'none' }], undefined)],
    { stdio: 'ignore' },
  );
  child.once('error', (error) => (failed = error.message));
  child.once('exit', (code, signal) => (failed ??= `QEMU exited (${signal ?? code})`));
  try {
    const until = Date.now() + 300_000;
    while (Date.now() < until) {
      const line = existsSync(consoleLog) ? readFileSync(consoleLog, 'utf8').split('\n').find((text) => text.startsWith(GUEST_DDBENCH_PREFIX)) : undefined;
      if (line) {
        const [, mib, start, end] = line.trim().split(' ');
        return Number(mib) / (Number(end) - Number(start));
      }
      if (failed) throw new Error(`the guest ended before it wrote: ${failed}`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    throw new Error('the guest did not finish writing within 5 minutes');
  } finally {
    child.kill('SIGKILL');
  }
}

export async function storageBenchmarks(): Promise<string[]> {
  const dir = mkdtempSync(join(tmpdir(), 'acp-bench-storage-'));
  const lines: string[] = [];
  try {
    lines.push(await statsBench(dir));
    if (!hasDdBench()) {
      lines.push(`guest sequential write: skipped (needs ${QEMU_BINARY}, qemu-img and a test guest with acp.ddbench in ${guestImageDir()}: npm run guest-image)`);
      return lines;
    }
    const guest = await guestWrite(dir);
    const hostFile = join(dir, 'host.qcow2');
    await createImage(hostFile, 'qcow2', (DD_MIB + 16) * 1024 * 1024);
    const start = process.hrtime.bigint();
    await benchImage(hostFile, 'qcow2', DD_MIB * 16, 64 * 1024);
    const host = DD_MIB / (Number(process.hrtime.bigint() - start) / 1e9);
    lines.push(`guest sequential write to a qcow2 volume (dd, ${DD_MIB} MiB, cache=none): ${guest.toFixed(1)} MiB/s — ${(guest / host).toFixed(2)}× of qemu-img bench -w on the host to the same pool (${host.toFixed(1)} MiB/s)`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return lines;
}
