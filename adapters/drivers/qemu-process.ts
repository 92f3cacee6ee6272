/**
 * A guest's QEMU process, below the driver (qemu.ts): its files in the run dir, finding and
 * killing it by its pid file, starting it (as the VMM's child, or for an HA guest as the node's
 * fence guard's child), and seeing its end when it is not the VMM's child.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AcpError } from '../../runtime/errors.js';
import { isValidName } from '../../runtime/path.js';
import { spawnUnderGuard } from '../fence-guard-client.js';
import { parentOf } from '../proc-stat.js';
import { isProcessAlive } from '../process.js';
import { optionValue, QEMU_BINARY } from './qemu-args.js';
import { Qmp } from './qmp.js';
import type { GuestExit, GuestPaths } from './driver.js';

const QMP_CONNECT_MS = 10_000;

/** A guest's files in its run directory: QMP's socket, QEMU's pid file and its stderr. */
export function guestRunFiles(runDir: string): { qmp: string; pidfile: string; log: string } {
  return { qmp: join(runDir, 'qmp.sock'), pidfile: join(runDir, 'qemu.pid'), log: join(runDir, 'qemu.log') };
}

/** The last line QEMU wrote to its stderr (kept in the run dir), for an exit's reason. */
export function lastLogLine(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').at(-1)?.slice(0, 500) ?? '';
  } catch {
    return '';
  }
}

/** How a QEMU was started: its pid, when it ends, and the handle's hooks. */
export interface Started {
  readonly pid: number;
  readonly exited: Promise<GuestExit>;
  /** Connects QMP, racing QEMU's end (a QEMU that fails to start says why on its stderr). */
  connect(): Promise<Qmp>;
  /** The QEMU could not be set up: it goes. */
  abandon(): void;
  readonly hooks: { requested: () => void; released: () => void };
}

/** QEMU as this VMM's child. */
export async function startDirect(argv: string[], files: ReturnType<typeof guestRunFiles>): Promise<Started> {
  const log = openSync(files.log, 'w', 0o600);
  let child: ChildProcess;
  try {
    child = spawn(QEMU_BINARY, argv, { stdio: ['ignore', 'ignore', log], detached: true });
  } finally {
    closeSync(log);
  }
  let requested = false;
  const exited = new Promise<GuestExit>((resolve) => {
    child.once('error', (error: NodeJS.ErrnoException) =>
      resolve({ crashed: true, reason: error.code === 'ENOENT' ? `${QEMU_BINARY} is not installed` : error.message }),
    );
    child.once('exit', (code, signal) => {
      const how = signal ? `killed by ${signal}` : `exited with code ${code}`;
      const line = lastLogLine(files.log);
      resolve({ crashed: !requested && (signal !== null || code !== 0), reason: `QEMU ${how}${line ? `: ${line}` : ''}` });
    });
  });
  const spawnError = await Promise.race([
    new Promise<NodeJS.ErrnoException>((resolve) => child.once('error', resolve)),
    new Promise<undefined>((resolve) => child.once('spawn', () => resolve(undefined))),
  ]);
  if (spawnError) {
    if (spawnError.code === 'ENOENT') {
      throw new AcpError('ACP_ERR_DRIVER_MISSING', `${QEMU_BINARY} is not installed on this node: install qemu-system-x86 (apt-get install qemu-system-x86), or give the system driver 'sim'`);
    }
    throw new AcpError('ACP_ERR_VMM_FAILED', `QEMU did not start: ${spawnError.message}`);
  }
  return {
    pid: child.pid!,
    exited,
    connect: () =>
      Promise.race([
        Qmp.open(files.qmp, Date.now() + QMP_CONNECT_MS),
        exited.then((exit) => {
          throw new AcpError('ACP_ERR_VMM_FAILED', `${exit.reason}`);
        }),
      ]),
    abandon: () => void child.kill('SIGKILL'),
    hooks: {
      requested: () => {
        requested = true;
      },
      // Let go of: this VMM no longer waits for its child (which goes on in its own session).
      released: () => child.unref(),
    },
  };
}

/**
 * QEMU as the node's fence guard's child (an HA guest): the guard runs it under
 * `setpriv --pdeathsig KILL`, so it dies the moment the guard does. Not this VMM's child: its end
 * is seen as an adopted QEMU's is (QMP closes, the pid goes). Once QMP answers, QEMU's parent must
 * still be that guard (a guard that died before setpriv armed the signal would leave it unguarded).
 */
export async function startUnderGuard(id: string, argv: string[], paths: GuestPaths, files: ReturnType<typeof guestRunFiles>): Promise<Started> {
  if (paths.guardSocket === undefined) throw new AcpError('ACP_ERR_HA_GUARD_DOWN', `system '${id}' is HA, and its VMM knows no fence guard socket to start its QEMU through`);
  const { pid, guard } = await spawnUnderGuard(paths.guardSocket, { system: id, argv });
  let watch: ReturnType<typeof watchQemu> | undefined;
  let settled = false;
  const gone = (async () => {
    while (!settled && isProcessAlive(pid)) await new Promise((resolve) => setTimeout(resolve, 50));
  })();
  const ended = (): GuestExit => ({ crashed: true, reason: `QEMU (pid ${pid}, started by the fence guard) ended${lastLogLine(files.log) ? `: ${lastLogLine(files.log)}` : ''}` });
  let exitedLater: (exit: Promise<GuestExit>) => void = () => undefined;
  const exited = new Promise<GuestExit>((resolve) => {
    exitedLater = resolve;
  });
  return {
    pid,
    exited,
    async connect() {
      try {
        const qmp = await Promise.race([
          Qmp.open(files.qmp, Date.now() + QMP_CONNECT_MS),
          gone.then(() => {
            throw new AcpError('ACP_ERR_VMM_FAILED', ended().reason);
          }),
        ]);
        const parent = parentOf(pid);
        if (parent !== guard) {
          qmp.close();
          if (parent === null) throw new AcpError('ACP_ERR_VMM_FAILED', ended().reason);
          throw new AcpError('ACP_ERR_HA_GUARD_DOWN', `the fence guard (pid ${guard}) that started system '${id}''s QEMU (pid ${pid}) is gone: it would run unguarded, so it is stopped; the HA service starts a new guard`);
        }
        watch = watchQemu(qmp, pid, files, 'started by the fence guard');
        exitedLater(watch.exited);
        return qmp;
      } finally {
        settled = true;
      }
    },
    abandon() {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
      exitedLater(Promise.resolve(ended()));
    },
    hooks: {
      requested: () => watch?.requested(),
      released: () => watch?.released(),
    },
  };
}

/** QEMU's pid from its pid file, if there is one. */
export function readGuestPid(pidfile: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(pidfile, 'utf8').trim(), 10);
    return Number.isInteger(pid) && pid > 1 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Whether `pid` is alive and is this system's QEMU: its command line names the guest and its QMP socket (a reused pid is not). */
export function isGuestProcess(pid: number, id: string, qmpSocket: string): boolean {
  if (!isProcessAlive(pid)) return false;
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    const named = argv.some((arg, index) => arg === '-name' && argv[index + 1] === `acp-${id}`);
    return named && argv.some((arg) => arg.includes(optionValue(qmpSocket)));
  } catch {
    return false;
  }
}

/** A guest found in a run dir: its QEMU's pid, and whether that process is this system's QEMU. */
export function findGuest(id: string, runDir: string): { pid: number; alive: boolean } | undefined {
  const files = guestRunFiles(runDir);
  const pid = readGuestPid(files.pidfile);
  if (pid === undefined) return undefined;
  return { pid, alive: isGuestProcess(pid, id, files.qmp) };
}

/** SIGKILLs this system's QEMU if one runs (a last resort, where a guest must be gone); its pid, or undefined. */
export function killGuest(id: string, runDir: string): number | undefined {
  const found = findGuest(id, runDir);
  if (!found?.alive) return undefined;
  try {
    process.kill(found.pid, 'SIGKILL');
  } catch {
    return undefined;
  }
  return found.pid;
}

/**
 * SIGKILLs every QEMU a home's guests left running (checked as killGuest checks): for test and
 * harness teardown, where guests that outlive their daemon must not outlive the test. Their pids.
 */
export function killHomeGuests(home: string): number[] {
  const dir = join(home, 'run', 'vmm');
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names.filter(isValidName).flatMap((id) => {
    const pid = killGuest(id, join(dir, id));
    return pid === undefined ? [] : [pid];
  });
}

/**
 * The end of a QEMU that is not this VMM's child (adopted, or started by the fence guard): seen when
 * QMP's socket closes and the pid is gone; a guest that powered itself off said so (QMP's SHUTDOWN
 * event) and is not counted a crash. Once released (the daemon goes, the guest stays), it never ends
 * for this VMM.
 */
export function watchQemu(qmp: Qmp, pid: number, files: ReturnType<typeof guestRunFiles>, how: string): { exited: Promise<GuestExit>; requested: () => void; released: () => void } {
  let requested = false;
  let released = false;
  const exited = qmp.closed.then(async (): Promise<GuestExit> => {
    if (released) return new Promise<GuestExit>(() => undefined);
    for (let tries = 0; tries < 100 && isProcessAlive(pid); tries += 1) await new Promise((resolve) => setTimeout(resolve, 50));
    const line = lastLogLine(files.log);
    const byGuest = qmp.shutdown?.guest === true;
    return { crashed: !requested && !byGuest, reason: `QEMU (${how}, pid ${pid}) ${byGuest ? 'powered off' : requested ? 'stopped' : 'ended'}${line ? `: ${line}` : ''}` };
  });
  return {
    exited,
    requested: () => {
      requested = true;
    },
    released: () => {
      released = true;
    },
  };
}

