/**
 * How ACP runs a short-lived program (ip, bridge, lsblk, btrfs, qemu-img, ...): execFile, never a
 * shell, with a timeout and a bounded output, and *not from this process*. fork() copies the
 * calling process's page tables, so a spawn from a daemon of 300 MB holds its event loop for about
 * 20 ms (3 ms at 100 MB), and the Network service's pass spawns `ip` every 2 s: the longest
 * recurring stall in a profile of an idle daemon. So the programs are run by a small helper
 * process (exec-helper-main.ts), forked once and asked over its IPC channel. Should the helper be
 * gone, what comes next runs here, as before, and a new helper is tried on the next call (not
 * more often than once a second). What it had in hand is answered as failed, saying the outcome
 * is unknown: it may have run (`ip link add`, `qemu-img create`), so it is not run a second time;
 * a request the helper never received runs here. The helper runs with the environment it was
 * forked with, the caller's PATH at each call, and a request's own `env`.
 */
import { execFile, fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export interface ExecOptions {
  readonly timeoutMs: number;
  readonly maxBuffer: number;
  readonly killSignal?: NodeJS.Signals;
  /** Extra environment over this process's (fixed names and values, never a message's input). */
  readonly env?: Readonly<Record<string, string>>;
}

/** ok; missing: no such program (ENOENT); timeout: killed at timeoutMs; failed: a non-zero exit, a signal, output past maxBuffer, or a helper gone while running it. */
export type ExecOutcome = 'ok' | 'missing' | 'timeout' | 'failed';

export interface ExecResult {
  readonly outcome: ExecOutcome;
  readonly stdout: string;
  readonly stderr: string;
  /** Node's error message when not ok. */
  readonly message: string;
}

/** The helper's protocol. */
export interface ExecRequest {
  readonly id: number;
  readonly tool: string;
  readonly args: readonly string[];
  readonly timeoutMs: number;
  readonly maxBuffer: number;
  readonly killSignal: NodeJS.Signals;
  readonly env?: Readonly<Record<string, string>>;
}
export interface ExecReply extends ExecResult {
  readonly id: number;
}

const HELPER_MAIN = fileURLToPath(new URL('./exec-helper-main.js', import.meta.url));
const RETRY_HELPER_MS = 1000;

interface Pending {
  readonly request: ExecRequest;
  readonly resolve: (result: ExecResult) => void;
  /** The helper it was sent to. */
  readonly helper: ChildProcess;
}

let helper: ChildProcess | undefined;
let helperFailedAt = Number.NEGATIVE_INFINITY;
let nextId = 1;
const pending = new Map<number, Pending>();

/** Runs `tool ...args` (off this process when it can) and says how it went; never rejects. */
export function execProgram(tool: string, args: readonly string[], options: ExecOptions): Promise<ExecResult> {
  const request: ExecRequest = {
    id: nextId++,
    tool,
    args: [...args],
    timeoutMs: options.timeoutMs,
    maxBuffer: options.maxBuffer,
    killSignal: options.killSignal ?? 'SIGTERM',
    // The caller's PATH as it is now, not as it was when the helper was forked.
    env: { ...(process.env.PATH === undefined ? {} : { PATH: process.env.PATH }), ...options.env },
  };
  return new Promise((resolve) => {
    const channel = helperChannel();
    if (!channel) {
      runDirect(request, resolve);
      return;
    }
    pending.set(request.id, { request, resolve, helper: channel });
    channel.channel?.ref();
    channel.send(request, (error) => {
      if (error) takeBack(request.id);
    });
  });
}

/** The pid of the helper that runs programs now, if there is one (for tests and diagnostics). */
export function execHelperPid(): number | undefined {
  return helper?.pid;
}

function helperChannel(): ChildProcess | undefined {
  if (helper?.connected) return helper;
  if (Date.now() - helperFailedAt < RETRY_HELPER_MS) return undefined;
  try {
    const child = fork(HELPER_MAIN, [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], serialization: 'advanced', execArgv: [] });
    child.on('message', (reply: ExecReply) => {
      const waiting = pending.get(reply.id);
      if (!waiting) return;
      pending.delete(reply.id);
      if (pending.size === 0) child.channel?.unref();
      waiting.resolve({ outcome: reply.outcome, stdout: reply.stdout, stderr: reply.stderr, message: reply.message });
    });
    const gone = () => {
      if (helper !== child) return;
      helper = undefined;
      helperFailedAt = Date.now();
    };
    child.on('exit', gone);
    child.on('error', gone);
    // The channel closes once every answer sent on it has been read: what is still waiting was
    // received and may have run.
    child.on('disconnect', () => {
      gone();
      for (const [id, waiting] of [...pending]) {
        if (waiting.helper !== child) continue;
        pending.delete(id);
        const command = [waiting.request.tool, ...waiting.request.args].join(' ');
        waiting.resolve({ outcome: 'failed', stdout: '', stderr: '', message: `the exec helper (pid ${child.pid}) exited while running ${command}; whether it ran is unknown` });
      }
    });
    child.unref();
    child.channel?.unref();
    helper = child;
    return child;
  } catch {
    helperFailedAt = Date.now();
    return undefined;
  }
}

/** A request the helper never received (its send failed): run here instead. */
function takeBack(id: number): void {
  const waiting = pending.get(id);
  if (!waiting) return;
  pending.delete(id);
  runDirect(waiting.request, waiting.resolve);
}

/** Runs the request from this process; the helper's way too. Returns the child, if one started. */
export function runDirect(request: ExecRequest, resolve: (result: ExecResult) => void): ChildProcess | undefined {
  const { tool, args, timeoutMs, maxBuffer, killSignal, env } = request;
  try {
    return execFile(tool, args, { timeout: timeoutMs, maxBuffer, killSignal, encoding: 'utf8', ...(env ? { env: { ...process.env, ...env } } : {}) }, (error, stdout, stderr) => {
      if (!error) {
        resolve({ outcome: 'ok', stdout, stderr, message: '' });
        return;
      }
      const code = (error as NodeJS.ErrnoException).code;
      const outcome: ExecOutcome = code === 'ENOENT' ? 'missing' : (error as { killed?: boolean }).killed ? 'timeout' : 'failed';
      resolve({ outcome, stdout: String(stdout ?? ''), stderr: String(stderr ?? ''), message: error.message });
    });
  } catch (error) {
    resolve({ outcome: 'failed', stdout: '', stderr: '', message: (error as Error).message });
    return undefined;
  }
}
