/**
 * `npm run bench -- network`, part 2: TCP throughput between two test guests on one bridge through
 * their taps, beside the same host's veth throughput, both measured with the same busybox (the
 * guest's own binary, taken from its initramfs) sending zeros with `dd | nc` to an `nc -l` sink.
 *
 * The bridge and the taps are made the Network service's way (its plan, applied by
 * adapters/iproute2.ts) and QEMU gets the driver's own NIC arguments, so the path measured is the
 * one a system's NIC takes. Each side sends ROUNDS times; the medians are compared. The guest's
 * rounds are timed by its clock (under TCG here, KVM where it works), the host's by hrtime.
 * Runs inside the namespace bench/network.ts made (root needed); the veth peer is a namespace of
 * its own, deleted after.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { systemObjectSchema, networkObjectSchema } from '../actors/model.js';
import { plan } from '../actors/network/reconcile.js';
import { nicArgs, QEMU_BINARY } from '../adapters/drivers/qemu-args.js';
import { probeAccelerator } from '../adapters/drivers/accelerator.js';
import { GUEST_NET_PREFIX, GUEST_NETBENCH_PREFIX, GUEST_READY_LINE, guestImage, guestImageDir } from '../adapters/guest-image.js';
import { tapName } from '../adapters/interface-names.js';
import { apply, listLinks } from '../adapters/iproute2.js';

const MIB = 32;
const ROUNDS = 3;
const PORT = 5001;
const SCOPE = 'bench/n1';

export interface ThroughputResult {
  readonly guestMiBs: number[];
  readonly vethMiBs: number[];
}

const median = (values: readonly number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

/** One member of a newc cpio archive (the initramfs guest-image.ts writes). */
function cpioMember(archive: Buffer, wanted: string): Buffer | undefined {
  let offset = 0;
  while (offset + 110 <= archive.length) {
    const field = (at: number) => Number.parseInt(archive.toString('ascii', offset + at, offset + at + 8), 16);
    const fileSize = field(54);
    const nameSize = field(94);
    const name = archive.toString('utf8', offset + 110, offset + 110 + nameSize - 1);
    const data = (offset + 110 + nameSize + 3) & ~3;
    if (name === wanted) return archive.subarray(data, data + fileSize);
    if (name === 'TRAILER!!!') return undefined;
    offset = (data + fileSize + 3) & ~3;
  }
  return undefined;
}

/** Why the guest part cannot run here, or undefined. */
export function guestThroughputMissing(): string | undefined {
  try {
    execFileSync(QEMU_BINARY, ['--version'], { stdio: 'ignore' });
  } catch {
    return `${QEMU_BINARY} is not installed`;
  }
  const image = guestImage();
  if (!image) return `no test guest in ${guestImageDir()} (npm run guest-image)`;
  if (!gunzipSync(readFileSync(image.initrd)).includes(GUEST_NETBENCH_PREFIX)) return `the test guest in ${guestImageDir()} predates acp.netsend (npm run guest-image builds it again)`;
  return undefined;
}

async function waitForLines(file: string, prefix: string, count: number, process: ChildProcess, what: string): Promise<string[]> {
  let ended: string | undefined;
  process.once('exit', (code, signal) => (ended = `QEMU exited (${signal ?? code})`));
  const until = Date.now() + 300_000;
  while (Date.now() < until) {
    const lines = existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((line) => line.startsWith(prefix)) : [];
    if (lines.length >= count) return lines;
    if (ended) throw new Error(`${what}: ${ended}; its console: ${existsSync(file) ? readFileSync(file, 'utf8').slice(-400) : '(none)'}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`${what}: no '${prefix}' line within 5 minutes`);
}

async function guestRounds(dir: string): Promise<number[]> {
  const image = guestImage()!;
  const bridge = networkObjectSchema.parse({ name: 'gbench', type: 'bridge' });
  const ids = ['sink', 'send'] as const;
  const taps = ids.map((id) => ({ system: id, network: bridge.name, name: tapName(id, 0), up: true }));
  const decided = plan(SCOPE, 'n1', [bridge], taps, await listLinks());
  for (const operation of decided.operations) await apply(operation);
  if (decided.reports[bridge.name]?.state !== 'up') throw new Error(`the bench bridge is not up: ${JSON.stringify(decided.reports[bridge.name])}`);
  const { accelerator } = await probeAccelerator(image, GUEST_READY_LINE, join(homedir(), '.cache', 'acp', 'accelerator.json'));
  const children: ChildProcess[] = [];
  const boot = (id: (typeof ids)[number], extra: string) => {
    const consoleLog = join(dir, `${id}.console`);
    const spec = systemObjectSchema.parse({ name: id, driver: 'qemu', nics: [{ network: bridge.name }] });
    const child = spawn(
      QEMU_BINARY,
      ['-machine', `pc,accel=${accelerator}`, '-m', '192', '-nodefaults', '-no-user-config', '-display', 'none', '-chardev', `file,id=console,path=${consoleLog}`, '-serial', 'chardev:console', '-kernel', image.kernel, '-initrd', image.initrd, '-append', `${image.cmdline} ${extra}`, ...nicArgs(id, spec)],
      { stdio: 'ignore' },
    );
    children.push(child);
    return { child, consoleLog };
  };
  try {
    const sink = boot('sink', `acp.ip=10.77.0.1/24 acp.netsink=${PORT}`);
    await waitForLines(sink.consoleLog, GUEST_NET_PREFIX, 1, sink.child, 'the sink guest');
    const sender = boot('send', `acp.ip=10.77.0.2/24 acp.netsend=10.77.0.1:${PORT}:${MIB}:${ROUNDS}`);
    const lines = await waitForLines(sender.consoleLog, GUEST_NETBENCH_PREFIX, ROUNDS, sender.child, 'the sending guest');
    return lines.map((line) => {
      const [, mib, start, end] = line.trim().split(' ');
      return Number(mib) / (Number(end) - Number(start));
    });
  } finally {
    for (const child of children) child.kill('SIGKILL');
    for (const operation of plan(SCOPE, 'n1', [], [], await listLinks()).operations) await apply(operation).catch(() => undefined);
  }
}

function vethRounds(dir: string, busybox: string): number[] {
  const peer = `acpbench-peer-${process.pid}`;
  execFileSync('ip', ['netns', 'add', peer]);
  try {
    execFileSync('ip', ['link', 'add', 'vbench0', 'type', 'veth', 'peer', 'name', 'vbench1', 'netns', peer]);
    execFileSync('ip', ['addr', 'add', '10.78.0.1/24', 'dev', 'vbench0']);
    execFileSync('ip', ['link', 'set', 'vbench0', 'up']);
    execFileSync('ip', ['-n', peer, 'addr', 'add', '10.78.0.2/24', 'dev', 'vbench1']);
    execFileSync('ip', ['-n', peer, 'link', 'set', 'vbench1', 'up']);
    // As in the guest: the sink's stdin a FIFO it holds open, so it never reads EOF there.
    const fifo = join(dir, 'sink.fifo');
    execFileSync(busybox, ['mkfifo', fifo]);
    const sink = spawn('ip', ['netns', 'exec', peer, 'sh', '-c', `while true; do "$1" nc -l -p ${PORT} > /dev/null <> "$2"; done`, 'sink', busybox, fifo], { stdio: 'ignore', detached: true });
    try {
      execFileSync('sleep', ['0.5']);
      const rates: number[] = [];
      for (let round = 0; round < ROUNDS; round += 1) {
        const start = process.hrtime.bigint();
        execFileSync('sh', ['-c', `"$1" dd if=/dev/zero bs=1M count=${MIB} 2>/dev/null | "$1" nc 10.78.0.2 ${PORT}`, 'send', busybox], { timeout: 60_000 });
        rates.push(MIB / (Number(process.hrtime.bigint() - start) / 1e9));
      }
      return rates;
    } finally {
      process.kill(-sink.pid!, 'SIGKILL');
    }
  } finally {
    execFileSync('ip', ['netns', 'delete', peer]);
  }
}

/** Inside the bench namespace: both measurements. */
export async function guestThroughput(): Promise<ThroughputResult> {
  const dir = mkdtempSync(join(tmpdir(), 'acp-bench-net-'));
  try {
    const busybox = cpioMember(gunzipSync(readFileSync(guestImage()!.initrd)), 'bin/busybox');
    if (!busybox) throw new Error('the test guest has no bin/busybox');
    writeFileSync(join(dir, 'busybox'), busybox, { mode: 0o755 });
    const guestMiBs = await guestRounds(dir);
    const vethMiBs = vethRounds(dir, join(dir, 'busybox'));
    return { guestMiBs, vethMiBs };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function throughputLine(result: ThroughputResult): string {
  const guest = median(result.guestMiBs);
  const veth = median(result.vethMiBs);
  const spread = (values: readonly number[]) => `${Math.min(...values).toFixed(0)}-${Math.max(...values).toFixed(0)}`;
  return `guest to guest TCP through taps on one bridge (busybox dd | nc, ${MIB} MiB, median of ${ROUNDS}): ${guest.toFixed(1)} MiB/s (${spread(result.guestMiBs)}) — ${(guest / veth).toFixed(3)}× the same busybox over a host veth pair (${veth.toFixed(0)} MiB/s, ${spread(result.vethMiBs)})`;
}
