/** Whether guests really run under KVM on this host, or TCG is the accelerator (probed once, cached). */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { QEMU_BINARY } from './qemu-args.js';

export interface AcceleratorProbe {
  accelerator: 'kvm' | 'tcg';
  why: string;
}

const PROBE_TIMEOUT_MS = 15_000;

/**
 * KVM only if a guest really runs under it: on some hosts /dev/kvm exists but a Linux guest hangs.
 * Boots `probe` (the test guest) with accel=kvm and waits for its ready line; anything else is TCG.
 * Cached per host (kernel, QEMU) in `cacheFile`, since it costs a boot.
 */
export async function probeAccelerator(probe: { kernel: string; initrd: string; cmdline: string } | undefined, readyLine: string, cacheFile: string): Promise<AcceleratorProbe> {
  if (!existsSync('/dev/kvm')) return { accelerator: 'tcg', why: 'no /dev/kvm on this host' };
  let version: string;
  try {
    version = execFileSync(QEMU_BINARY, ['--version'], { encoding: 'utf8' }).split('\n')[0]!;
  } catch {
    return { accelerator: 'tcg', why: `${QEMU_BINARY} is not installed` };
  }
  const key = `${release()} ${version}`;
  try {
    const cached = JSON.parse(readFileSync(cacheFile, 'utf8')) as AcceleratorProbe & { key: string };
    if (cached.key === key && (cached.accelerator === 'kvm' || cached.accelerator === 'tcg')) return { accelerator: cached.accelerator, why: `${cached.why} (probed before)` };
  } catch {
    // No cache yet: probe.
  }
  if (!probe) return { accelerator: 'tcg', why: 'no guest to probe KVM with (npm run guest-image); TCG until one is there' };
  const dir = mkdtempSync(join(tmpdir(), 'acp-kvm-probe-'));
  const consoleLog = join(dir, 'console.log');
  const child = spawn(
    QEMU_BINARY,
    ['-machine', 'pc,accel=kvm', '-m', '128', '-nodefaults', '-no-user-config', '-display', 'none', '-chardev', `file,id=console,path=${consoleLog}`, '-serial', 'chardev:console', '-kernel', probe.kernel, '-initrd', probe.initrd, '-append', probe.cmdline],
    { stdio: 'ignore' },
  );
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.once('error', () => undefined);
  const until = Date.now() + PROBE_TIMEOUT_MS;
  let ran = false;
  while (Date.now() < until) {
    if (existsSync(consoleLog) && readFileSync(consoleLog, 'utf8').includes(readyLine)) {
      ran = true;
      break;
    }
    if (child.exitCode !== null) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  child.kill('SIGKILL');
  await exited;
  rmSync(dir, { recursive: true, force: true });
  const result: AcceleratorProbe = ran ? { accelerator: 'kvm', why: 'a guest booted under KVM' } : { accelerator: 'tcg', why: `a guest did not come up under KVM within ${PROBE_TIMEOUT_MS / 1000} s` };
  try {
    mkdirSync(dirname(cacheFile), { recursive: true });
    writeFileSync(cacheFile, JSON.stringify({ ...result, key }));
  } catch {
    // An unwritable cache only means probing again next time.
  }
  return result;
}

/**
 * The migration URI, built here from a checked address: `tcp:` only, never a URI from elsewhere
 * (QEMU runs an `exec:` URI as a shell command).
 */
