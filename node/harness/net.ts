import { execFile, execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * The plumbing under the harness: `ip` commands, network namespaces, and finding what a crashed
 * run left behind. Every namespace, and every home directory, a harness makes is named
 * `acph-<pid>-<k>-...`, with the pid of the process that made it: a later run deletes those whose
 * process is gone.
 */
export const PREFIX = 'acph';

const LEFTOVER = new RegExp(`^${PREFIX}-(\\d+)-`);

export class IpError extends Error {
  constructor(
    readonly args: readonly string[],
    readonly stderr: string,
  ) {
    super(`ip ${args.join(' ')} failed: ${stderr.trim() || 'no message'}`);
  }
}

/** Runs `ip ...args`; resolves with its stdout, rejects with its stderr. */
export function ip(args: readonly string[], timeoutMs = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('ip', args, { timeout: timeoutMs }, (error, stdout, stderr) => {
      if (error) reject(new IpError(args, stderr || error.message));
      else resolve(stdout);
    });
  });
}

/** Same, synchronous and never throwing (for the exit handler): stdout, or undefined on failure. */
export function ipSync(args: readonly string[]): string | undefined {
  try {
    return execFileSync('ip', args, { timeout: 10_000, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  } catch {
    return undefined;
  }
}

/** `sysctl -w key=value` inside a namespace (`/proc/sys` is per network namespace). */
export async function sysctlIn(ns: string, key: string, value: string): Promise<void> {
  try {
    await ip(['netns', 'exec', ns, 'sysctl', '-q', '-w', `${key}=${value}`]);
  } catch {
    // No sysctl binary: write the file the same way it would, from inside the namespace.
    await ip(['netns', 'exec', ns, 'sh', '-c', `echo ${value} > /proc/sys/${key.replace(/\./g, '/')}`]);
  }
}

/** Names of the network namespaces `ip netns list` shows (the name is the first word of a line). */
export function listNamespaces(): string[] {
  const out = ipSync(['netns', 'list']) ?? '';
  return out
    .split('\n')
    .map((line) => line.trim().split(/\s+/)[0] ?? '')
    .filter((name) => name.length > 0);
}

/** The pids of every process in a namespace (`ip netns pids`); [] when it has none or is gone. */
export function namespacePids(ns: string): number[] {
  const out = ipSync(['netns', 'pids', ns]) ?? '';
  return out
    .split(/\s+/)
    .map((word) => Number.parseInt(word, 10))
    .filter((pid) => Number.isInteger(pid) && pid > 0);
}

/**
 * Whether a process is gone: no such pid, or a zombie (a detached daemon's parent has exited, so
 * it is reaped by whatever pid 1 is, which in a container may never happen).
 */
export function isGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'EPERM';
  }
  try {
    // /proc/<pid>/stat: "pid (comm) S ...": the state follows the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state === 'Z' || state === 'X';
  } catch {
    return true;
  }
}

export function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch {
    // gone already
  }
}

/** SIGKILLs every process in the namespace (a few rounds: one may have been forking), then deletes it. */
export function destroyNamespaceSync(ns: string): void {
  for (let round = 0; round < 5; round += 1) {
    const pids = namespacePids(ns).filter((pid) => pid !== process.pid);
    if (pids.length === 0) break;
    for (const pid of pids) signal(pid, 'SIGKILL');
  }
  ipSync(['netns', 'delete', ns]);
}

/** The async twin of destroyNamespaceSync, which also waits until the killed processes are gone. */
export async function destroyNamespace(ns: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pids = namespacePids(ns).filter((pid) => pid !== process.pid && !isGone(pid));
    if (pids.length === 0 || Date.now() > deadline) break;
    for (const pid of pids) {
      signal(pid, 'SIGCONT');
      signal(pid, 'SIGKILL');
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await ip(['netns', 'delete', ns]).catch(() => undefined);
}

function ownerGone(name: string): boolean {
  const match = LEFTOVER.exec(name);
  if (!match) return false;
  const pid = Number(match[1]);
  return pid !== process.pid && isGone(pid);
}

/**
 * Deletes what a crashed run left: `acph-<pid>-*` namespaces (their processes killed first) and
 * home directories in os.tmpdir(), whose <pid> is no longer a live process. Returns what it removed.
 */
export function removeLeftovers(): string[] {
  const removed: string[] = [];
  // Node namespaces before switch namespaces: deleting a node's namespace removes its veth pair.
  const stale = listNamespaces().filter(ownerGone).sort((a, b) => Number(a.endsWith('-sw')) - Number(b.endsWith('-sw')));
  for (const ns of stale) {
    destroyNamespaceSync(ns);
    removed.push(ns);
  }
  let entries: string[] = [];
  try {
    entries = readdirSync(tmpdir());
  } catch {
    // no tmpdir listing: nothing to clean there
  }
  for (const entry of entries.filter(ownerGone)) {
    rmSync(join(tmpdir(), entry), { recursive: true, force: true });
    removed.push(join(tmpdir(), entry));
  }
  return removed;
}

let availability: { ok: true } | { ok: false; why: string } | undefined;

/**
 * Whether this host can run the harness: root, iproute2's `ip`, and network namespaces with a
 * bridge and a veth pair in them (tried on a probe namespace, then deleted). Says what is missing.
 */
export function harnessAvailable(): { ok: true } | { ok: false; why: string } {
  availability ??= probe();
  return availability;
}

function probe(): { ok: true } | { ok: false; why: string } {
  if (process.platform !== 'linux') return { ok: false, why: `network namespaces need Linux; this is ${process.platform}` };
  if (process.getuid?.() !== 0) return { ok: false, why: `creating network namespaces needs root; this process runs as uid ${process.getuid?.()}` };
  try {
    execFileSync('ip', ['-V'], { stdio: 'pipe', timeout: 10_000 });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return { ok: false, why: code === 'ENOENT' ? "the 'ip' command (iproute2) is not installed or not on PATH" : `'ip -V' failed: ${(error as Error).message}` };
  }
  const ns = `${PREFIX}-${process.pid}-probe`;
  const step = (what: string, args: string[]): string | undefined => {
    try {
      execFileSync('ip', args, { stdio: 'pipe', timeout: 10_000 });
      return undefined;
    } catch (error) {
      const stderr = String((error as { stderr?: Buffer }).stderr ?? '').trim();
      return `${what} failed (ip ${args.join(' ')}): ${stderr || (error as Error).message}`;
    }
  };
  ipSync(['netns', 'delete', ns]);
  const failed =
    step('creating a network namespace', ['netns', 'add', ns]) ??
    step('creating a bridge in a namespace', ['-n', ns, 'link', 'add', 'probe-br', 'type', 'bridge']) ??
    step('creating a veth pair in a namespace', ['-n', ns, 'link', 'add', 'probe-v0', 'type', 'veth', 'peer', 'name', 'probe-v1']);
  const cleanup = step('deleting a network namespace', ['netns', 'delete', ns]);
  if (failed) return { ok: false, why: failed };
  if (cleanup) return { ok: false, why: cleanup };
  return { ok: true };
}
