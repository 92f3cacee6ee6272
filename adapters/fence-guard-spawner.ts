/**
 * The fence guard's spawn channel, guard side (runs in the guard process, fence-guard-main.ts):
 * it listens on `<run>/fence-guard.sock` (0600) and starts the node's HA QEMU guests as its own
 * children, each through `setpriv --pdeathsig KILL -- <QEMU_BINARY> ...argv` (setpriv execs, so
 * the pid is QEMU's and its parent is the guard): when the guard dies, however it dies, the kernel
 * kills them. It starts nothing but QEMU (the request names no program), with an argv array (no
 * shell), only for a system whose run dir exists, only when the arguments name that system and
 * its pid file there, and only while the guard is armed (the node holds its HA lease). Children
 * are reaped as they end (node's child_process waits for them) and each end is logged.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, chmodSync, closeSync, constants, lstatSync, openSync, readlinkSync, realpathSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { delimiter, join } from 'node:path';
import { QEMU_BINARY } from './drivers/qemu-args.js';
import { fenceGuardSocket, guardedGuestDir, SPAWN_REQUEST_MAX_BYTES, spawnRequestSchema, type SpawnErrorCode, type SpawnReply, type SpawnRequest } from './fence-guard-protocol.js';

const REQUEST_MS = 5000;

/** Options QEMU must never get from the guard: -daemonize forks away from it (its guard would no longer be its parent). */
const FORBIDDEN = new Set(['-daemonize']);

/** How long setpriv may take to exec QEMU (a loaded machine: well under a second). */
const EXEC_WAIT_MS = 5000;

/** Whether process `pid` (setpriv, at `setprivPath`) has exec'd something else while still alive, within EXEC_WAIT_MS. */
async function execedFrom(setprivPath: string, pid: number, child: ChildProcess): Promise<boolean> {
  const giveUpAt = Date.now() + EXEC_WAIT_MS;
  while (child.exitCode === null && child.signalCode === null && Date.now() < giveUpAt) {
    try {
      if (readlinkSync(`/proc/${pid}/exe`) !== setprivPath) return true;
    } catch {
      return false;
    }
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
  return false;
}

/** The program a bare name resolves to on PATH (or the path itself, when it names one), if executable. */
export function findProgram(name: string): string | null {
  const candidates = name.includes('/') ? [name] : (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter).filter((dir) => dir !== '').map((dir) => join(dir, name));
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not there
    }
  }
  return null;
}

class Refused extends Error {
  constructor(readonly code: SpawnErrorCode, message: string) {
    super(message);
  }
}

/** The value after `option` in argv, when it appears exactly once. */
function onlyValue(argv: readonly string[], option: string): string | undefined {
  const at = argv.flatMap((arg, index) => (arg === option ? [index] : []));
  return at.length === 1 ? argv[at[0]! + 1] : undefined;
}

/** Why this request may not be carried out, or null: the arguments must be this system's QEMU's. */
export function spawnRefusal(request: SpawnRequest, runDir: string): string | null {
  const forbidden = request.argv.find((arg) => FORBIDDEN.has(arg));
  if (forbidden !== undefined) return `QEMU is not started with ${forbidden}: it must stay the fence guard's child`;
  if (onlyValue(request.argv, '-name') !== `acp-${request.system}`) return `the arguments must name the guest once: -name acp-${request.system}`;
  const pidfile = join(guardedGuestDir(runDir, request.system), 'qemu.pid');
  if (onlyValue(request.argv, '-pidfile') !== pidfile) return `the arguments must give the guest's pid file once: -pidfile ${pidfile}`;
  return null;
}

export interface SpawnerEvents {
  /** One JSON event for the guard's log. */
  say(event: Record<string, unknown>): void;
  /** Whether the guard is armed now (fed, its deadline not passed): HA guests start only then. */
  armed(): boolean;
}

export class GuardSpawner {
  private server: Server | null = null;
  /** The inode of the socket this guard bound: it removes the path on close only while it is still its own. */
  private inode: number | null = null;
  private closed = false;
  private readonly children = new Map<number, { system: string; child: ChildProcess }>();

  constructor(
    private readonly runDir: string,
    private readonly events: SpawnerEvents,
  ) {}

  get socket(): string {
    return fenceGuardSocket(this.runDir);
  }

  /** The live children's pids. */
  get live(): number[] {
    return [...this.children.keys()];
  }

  /** Binds the socket (taking the path over from an earlier guard: the newest guard is the node's). */
  listen(): Promise<void> {
    rmSync(this.socket, { force: true });
    const server = createServer((socket) => this.serve(socket));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.socket, () => {
        server.off('error', reject);
        chmodSync(this.socket, 0o600);
        this.inode = lstatSync(this.socket).ino;
        resolve();
      });
    });
  }

  /** Takes no more requests (the daemon is gone); the socket path goes unless a newer guard holds it. */
  close(): void {
    this.closed = true;
    this.server?.close();
    this.server = null;
    try {
      if (this.inode !== null && lstatSync(this.socket).ino === this.inode) rmSync(this.socket, { force: true });
    } catch {
      // gone already
    }
  }

  /** SIGKILLs every live child (the guard fires); their ends are reaped and logged as they come. */
  killAll(): number[] {
    const killed: number[] = [];
    for (const [pid, { child }] of this.children) {
      if (child.kill('SIGKILL')) killed.push(pid);
    }
    return killed;
  }

  private serve(socket: Socket): void {
    let buffered = '';
    let done = false;
    const timer = setTimeout(() => socket.destroy(), REQUEST_MS);
    const answer = (reply: SpawnReply) => {
      done = true;
      clearTimeout(timer);
      socket.end(`${JSON.stringify(reply)}\n`);
    };
    const refuse = (code: SpawnErrorCode, error: string) => {
      this.events.say({ event: 'spawn-refused', code, error });
      answer({ ok: false, code, error });
    };
    socket.on('error', () => undefined);
    socket.on('close', () => clearTimeout(timer));
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      if (done) return;
      buffered += chunk;
      const end = buffered.indexOf('\n');
      if (end < 0) {
        if (Buffer.byteLength(buffered) > SPAWN_REQUEST_MAX_BYTES) refuse('ACP_ERR_HA_GUARD_REFUSED', `a spawn request is one JSON line of at most ${SPAWN_REQUEST_MAX_BYTES} bytes`);
        return;
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(buffered.slice(0, end));
      } catch {
        refuse('ACP_ERR_HA_GUARD_REFUSED', 'a spawn request is one JSON line: this one is not JSON');
        return;
      }
      const request = spawnRequestSchema.safeParse(parsed);
      if (!request.success) {
        const issue = request.error.issues[0];
        refuse('ACP_ERR_HA_GUARD_REFUSED', `a bad spawn request: ${issue ? `${issue.path.join('.') || 'request'}: ${issue.message}` : 'invalid'}`);
        return;
      }
      this.spawn(request.data).then(answer, (error: unknown) => {
        if (error instanceof Refused) refuse(error.code, error.message);
        else refuse('ACP_ERR_VMM_FAILED', `QEMU did not start: ${(error as Error).message}`);
      });
    });
  }

  private async spawn(request: SpawnRequest): Promise<SpawnReply> {
    if (this.closed) throw new Refused('ACP_ERR_HA_GUARD_REFUSED', `this fence guard (pid ${process.pid}) lost its daemon and takes no more guests; the daemon's next guard does`);
    if (!this.events.armed()) throw new Refused('ACP_ERR_HA_GUARD_REFUSED', `the fence guard (pid ${process.pid}) is not armed: this node holds no HA lease now, so it starts no HA guest`);
    const refusal = spawnRefusal(request, this.runDir);
    if (refusal !== null) throw new Refused('ACP_ERR_HA_GUARD_REFUSED', refusal);
    const dir = guardedGuestDir(this.runDir, request.system);
    let isDir = false;
    try {
      isDir = lstatSync(dir).isDirectory();
    } catch {
      // missing
    }
    if (!isDir) throw new Refused('ACP_ERR_HA_GUARD_REFUSED', `system '${request.system}' has no run dir ${dir}: its VMM makes it before it starts the guest`);
    const setpriv = findProgram('setpriv');
    if (setpriv === null) throw new Refused('ACP_ERR_HA_SETPRIV_MISSING', "setpriv is not installed on this node: an HA QEMU guest runs under it so that it dies with the fence guard; install util-linux (apt-get install util-linux)");
    if (findProgram(QEMU_BINARY) === null) throw new Refused('ACP_ERR_DRIVER_MISSING', `${QEMU_BINARY} is not installed on this node: install qemu-system-x86 (apt-get install qemu-system-x86), or give the system driver 'sim'`);
    // QEMU's stderr, where the driver reads why it ended; never through a symlink.
    const log = openSync(join(dir, 'qemu.log'), constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, 0o600);
    let child: ChildProcess;
    try {
      // A session of its own (as a QEMU the VMM starts): signals to the guard's group do not reach it.
      child = spawn(setpriv, ['--pdeathsig', 'KILL', '--', QEMU_BINARY, ...request.argv], { stdio: ['ignore', 'ignore', log], detached: true });
    } finally {
      closeSync(log);
    }
    const failed = await new Promise<Error | undefined>((resolve) => {
      child.once('error', resolve);
      child.once('spawn', () => resolve(undefined));
    });
    if (failed !== undefined || child.pid === undefined) throw new Refused('ACP_ERR_VMM_FAILED', `QEMU did not start under setpriv: ${failed?.message ?? 'no pid'}`);
    const pid = child.pid;
    child.on('error', () => undefined);
    this.children.set(pid, { system: request.system, child });
    child.once('exit', (code, signal) => {
      this.children.delete(pid);
      this.events.say({ event: 'child-exited', system: request.system, child: pid, code, signal });
    });
    // setpriv sets the parent-death signal, then execs QEMU: answer once it has, so that a guest
    // reported started is one that dies with this guard.
    if (!(await execedFrom(realpathSync(setpriv), pid, child))) {
      child.kill('SIGKILL');
      throw new Refused('ACP_ERR_VMM_FAILED', `QEMU did not start under setpriv within ${EXEC_WAIT_MS} ms (see ${join(dir, 'qemu.log')})`);
    }
    this.events.say({ event: 'spawned', system: request.system, child: pid });
    return { ok: true, pid, guard: process.pid };
  }
}
