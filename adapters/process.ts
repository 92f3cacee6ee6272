import { readFileSync } from 'node:fs';

/** Whether a process with this pid exists (signal 0 probes without delivering anything). */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether the pid is alive and is an ACP daemon (not a recycled pid now used by something else). */
export function isDaemonProcess(pid: number): boolean {
  if (!isProcessAlive(pid)) return false;
  try {
    // An acpd is `node .../acp.js up ...`: a recycled pid now used by something else is not one.
    const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return args.some((arg) => /(^|\/)acp(\.js)?$/.test(arg)) && args.includes('up');
  } catch {
    return true; // no /proc: trust the liveness probe
  }
}
