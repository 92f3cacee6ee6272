import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { connect, isIP } from 'node:net';
import { join } from 'node:path';
import { AcpError } from '../../runtime/errors.js';
import { isValidName } from '../../runtime/path.js';
import { liveDiskCommand, parseBlockStats } from './disks.js';
import { optionValue, QEMU_BINARY, qemuArgs, serialSocket } from './qemu-args.js';
import { Qmp } from './qmp.js';
import { spawnUnderGuard } from '../fence-guard-client.js';
import { parentOf } from '../proc-stat.js';
import { vncSocket } from './vnc.js';
import { isMigrationHost, type GuestExit, type GuestHandle, type GuestSpec, type GuestPaths, type IncomingGuest, type MigrationAddress, type MigrationCredentials, type MigrationListen, type MigrationTarget, type SystemDriver } from './driver.js';

const QMP_CONNECT_MS = 10_000;
/** A live resize or internal snapshot writes the image's metadata (a snapshot copies its tables): longer than a query. */
const LIVE_DISK_MS = 60_000;


export function migrationUri(address: MigrationAddress): string {
  if (!isMigrationHost(address.host)) throw new AcpError('ACP_ERR_SCHEMA_REJECTED', `a migration goes to an IP address or a host name, not ${JSON.stringify(address.host)}`);
  if (!Number.isInteger(address.port) || address.port < 0 || address.port > 65535) throw new AcpError('ACP_ERR_SCHEMA_REJECTED', `a migration port is 0-65535, not ${address.port}`);
  return `tcp:${isIP(address.host) === 6 ? `[${address.host}]` : address.host}:${address.port}`;
}

type TlsEndpoint = 'server' | 'client';

/**
 * Loads this node's cluster certificate into QEMU as a `tls-creds-x509` object for one end of a
 * migration, and returns its id. QEMU reads fixed file names from a directory: a private one
 * (0700, under the guest's run dir, named by the role only) holds links to the home's secrets,
 * and goes once QEMU has read them. Both ends verify the peer against the cluster CA.
 */
async function loadCredentials(qmp: Qmp, runDir: string, credentials: MigrationCredentials, endpoint: TlsEndpoint, id: string): Promise<string> {
  if (!isValidName(credentials.node)) throw new AcpError('ACP_ERR_NAME_INVALID', `node name ${JSON.stringify(credentials.node)} is invalid`);
  const missing = [credentials.caCert, credentials.cert, credentials.key].filter((file) => !existsSync(file));
  if (missing.length > 0) {
    throw new AcpError('ACP_ERR_VMM_NO_PKI', `node '${credentials.node}' has no cluster certificate to encrypt a live migration with (missing ${missing.join(', ')}); run 'acp init' or 'acp join' on it first`);
  }
  const dir = join(runDir, `migration-tls-${endpoint}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  try {
    symlinkSync(credentials.caCert, join(dir, 'ca-cert.pem'));
    symlinkSync(credentials.cert, join(dir, `${endpoint}-cert.pem`));
    symlinkSync(credentials.key, join(dir, `${endpoint}-key.pem`));
    await qmp.execute('object-add', { 'qom-type': 'tls-creds-x509', id, dir, endpoint, 'verify-peer': true });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return id;
}

/** Real virtual machines: QEMU driven over QMP, with the accelerator the node's probe chose. */
export const qemuDriver: SystemDriver = {
  name: 'qemu',
  start: (id, spec, paths) => launch(id, spec, paths, false).then(({ handle }) => handle),
  async incoming(id, spec, paths, listen: MigrationListen, credentials): Promise<IncomingGuest> {
    if (!isValidName(listen.from)) throw new AcpError('ACP_ERR_NAME_INVALID', `a migration comes from a node, not ${JSON.stringify(listen.from)}`);
    const { handle, qmp } = await launch(id, spec, paths, true);
    try {
      // TLS, and only the source node's certificate may send the guest: anyone else who connects
      // first fails the handshake, and QEMU keeps waiting for the real source.
      const tls = await loadCredentials(qmp, paths.runDir, credentials, 'server', 'acp-migration-tls');
      await qmp.execute('object-add', { 'qom-type': 'authz-simple', id: 'acp-migration-authz', identity: `CN=${listen.from}` });
      await qmp.execute('migrate-set-parameters', { 'tls-creds': tls, 'tls-authz': 'acp-migration-authz' });
      await qmp.execute('migrate-incoming', { uri: migrationUri({ host: listen.host, port: 0 }) });
      const status = (await qmp.execute('query-migrate')) as { 'socket-address'?: { host: string; port: string }[] };
      const address = status['socket-address']?.[0];
      if (!address) throw new AcpError('ACP_ERR_VMM_FAILED', 'QEMU did not say where it listens for the incoming migration');
      return { handle, address: { host: listen.host, port: Number(address.port) } };
    } catch (error) {
      await handle.stop(false, 0);
      throw error;
    }
  },
};

const MIGRATION_POLL_MS = 100;

/** A guest's files in its run directory: QMP's socket, QEMU's pid file and its stderr. */
export function guestRunFiles(runDir: string): { qmp: string; pidfile: string; log: string } {
  return { qmp: join(runDir, 'qmp.sock'), pidfile: join(runDir, 'qemu.pid'), log: join(runDir, 'qemu.log') };
}

/** The last line QEMU wrote to its stderr (kept in the run dir), for an exit's reason. */
function lastLogLine(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').at(-1)?.slice(0, 500) ?? '';
  } catch {
    return '';
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** How a QEMU was started: its pid, when it ends, and the handle's hooks. */
interface Started {
  readonly pid: number;
  readonly exited: Promise<GuestExit>;
  /** Connects QMP, racing QEMU's end (a QEMU that fails to start says why on its stderr). */
  connect(): Promise<Qmp>;
  /** The QEMU could not be set up: it goes. */
  abandon(): void;
  readonly hooks: { requested: () => void; released: () => void };
}

/**
 * Starts QEMU (for an incoming migration: waiting for it, `-incoming defer`) and connects QMP.
 * QEMU runs in a session of its own (setsid), with its pid file, QMP socket and stderr in the
 * guest's run dir: it outlives its VMM container and the daemon, and a later VMM adopts it. An HA
 * guest's QEMU is started by the node's fence guard instead, as its child, and dies with it.
 */
async function launch(id: string, spec: GuestSpec, paths: GuestPaths, incoming: boolean): Promise<{ handle: GuestHandle; qmp: Qmp }> {
  if (!spec.boot && (paths.disks ?? []).length === 0 && !paths.cdrom) throw new AcpError('ACP_ERR_SCHEMA_REJECTED', `system '${id}' has no boot: give it {kernel, initrd, cmdline}, a disk or an iso`);
  const bootFiles = !spec.boot ? [] : 'kernel' in spec.boot ? [spec.boot.kernel, spec.boot.initrd] : spec.boot.disk.startsWith('/') ? [spec.boot.disk] : [];
  for (const file of bootFiles) {
    if (file !== undefined && !existsSync(file)) throw new AcpError('ACP_ERR_VMM_FAILED', `system '${id}' boots from ${file}, which does not exist on this node`);
  }
  const accelerator = paths.accelerator ?? 'tcg';
  const files = guestRunFiles(paths.runDir);
  // A guest of this id that still runs (left by a daemon that died) is adopted, never doubled.
  const running = readGuestPid(files.pidfile);
  if (running !== undefined && isGuestProcess(running, id, files.qmp)) {
    throw new AcpError('ACP_ERR_SYSTEM_BAD_STATE', `a QEMU for system '${id}' already runs (pid ${running}); it is adopted, not started again`);
  }
  // A socket or pid file left by an earlier QEMU must not be mistaken for this one's.
  rmSync(files.qmp, { force: true });
  rmSync(files.pidfile, { force: true });
  rmSync(serialSocket(paths.runDir), { force: true });
  rmSync(vncSocket(paths.runDir), { force: true });
  const argv = [...qemuArgs(id, spec, paths, accelerator, incoming ? 'defer' : undefined), '-pidfile', files.pidfile];
  const started = spec.ha === true ? await startUnderGuard(id, argv, paths, files) : await startDirect(argv, files);
  let qmp: Qmp;
  try {
    qmp = await started.connect();
  } catch (error) {
    started.abandon();
    throw error;
  }
  return { handle: guestHandle(qmp, started.pid, accelerator, paths, started.exited, started.hooks), qmp };
}

/** QEMU as this VMM's child. */
async function startDirect(argv: string[], files: ReturnType<typeof guestRunFiles>): Promise<Started> {
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
async function startUnderGuard(id: string, argv: string[], paths: GuestPaths, files: ReturnType<typeof guestRunFiles>): Promise<Started> {
  if (paths.guardSocket === undefined) throw new AcpError('ACP_ERR_HA_GUARD_DOWN', `system '${id}' is HA, and its VMM knows no fence guard socket to start its QEMU through`);
  const { pid, guard } = await spawnUnderGuard(paths.guardSocket, { system: id, argv });
  let watch: ReturnType<typeof watchQemu> | undefined;
  let settled = false;
  const gone = (async () => {
    while (!settled && pidAlive(pid)) await new Promise((resolve) => setTimeout(resolve, 50));
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
        if (parentOf(pid) !== guard) {
          qmp.close();
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
function readGuestPid(pidfile: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(pidfile, 'utf8').trim(), 10);
    return Number.isInteger(pid) && pid > 1 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Whether `pid` is alive and is this system's QEMU: its command line names the guest and its QMP socket (a reused pid is not). */
function isGuestProcess(pid: number, id: string, qmpSocket: string): boolean {
  if (!pidAlive(pid)) return false;
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

const ADOPT_QMP_MS = 5000;

/**
 * Takes over a QEMU that a VMM before this one started (the daemon restarted, or the VMM
 * died): checked by its pid file, its command line and QMP's `query-name`. Not this VMM's child,
 * so its end is seen when QMP's socket closes and the pid is gone; a guest that powered itself
 * off said so (QMP's SHUTDOWN event) and is not counted a crash.
 */
export async function adoptQemu(id: string, paths: GuestPaths): Promise<{ handle: GuestHandle; status: 'running' | 'paused' }> {
  const files = guestRunFiles(paths.runDir);
  const pid = readGuestPid(files.pidfile);
  if (pid === undefined) throw new AcpError('ACP_ERR_VMM_FAILED', `system '${id}' has no QEMU pid file in ${paths.runDir}`);
  if (!isGuestProcess(pid, id, files.qmp)) throw new AcpError('ACP_ERR_VMM_FAILED', `system '${id}''s QEMU (pid ${pid}) is gone`);
  const qmp = await Qmp.open(files.qmp, Date.now() + ADOPT_QMP_MS);
  try {
    const name = (await qmp.execute('query-name')) as { name?: string };
    if (name.name !== `acp-${id}`) throw new AcpError('ACP_ERR_VMM_FAILED', `the QEMU on ${files.qmp} is '${name.name ?? 'unnamed'}', not acp-${id}`);
    const kvm = (await qmp.execute('query-kvm')) as { enabled?: boolean };
    const status = (await qmp.execute('query-status')) as { status?: string };
    const watch = watchQemu(qmp, pid, files, 'adopted');
    const handle = guestHandle(qmp, pid, kvm.enabled ? 'kvm' : 'tcg', paths, watch.exited, watch);
    return { handle, status: status.status === 'paused' ? 'paused' : 'running' };
  } catch (error) {
    qmp.close();
    throw error;
  }
}

/**
 * The end of a QEMU that is not this VMM's child (adopted, or started by the fence guard): seen when
 * QMP's socket closes and the pid is gone; a guest that powered itself off said so (QMP's SHUTDOWN
 * event) and is not counted a crash. Once released (the daemon goes, the guest stays), it never ends
 * for this VMM.
 */
function watchQemu(qmp: Qmp, pid: number, files: ReturnType<typeof guestRunFiles>, how: string): { exited: Promise<GuestExit>; requested: () => void; released: () => void } {
  let requested = false;
  let released = false;
  const exited = qmp.closed.then(async (): Promise<GuestExit> => {
    if (released) return new Promise<GuestExit>(() => undefined);
    for (let tries = 0; tries < 100 && pidAlive(pid); tries += 1) await new Promise((resolve) => setTimeout(resolve, 50));
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

/** The handle on a QEMU, whether started by this VMM or adopted: everything goes through QMP, and the pid only when it hangs. */
function guestHandle(qmp: Qmp, pid: number, accelerator: string, paths: GuestPaths, exited: Promise<GuestExit>, hooks: { requested: () => void; released: () => void }): GuestHandle {
  const gone = async (timeoutMs: number) => {
    const timer = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), timeoutMs));
    return Promise.race([exited.then(() => 'gone' as const), timer]);
  };
  let migrations = 0;
  const handle: GuestHandle = {
    pid,
    accelerator,
    async migrate(target: MigrationTarget, credentials: MigrationCredentials) {
      if (!target.address) throw new AcpError('ACP_ERR_SCHEMA_REJECTED', `a QEMU guest migrates to a host and port; none was named for node '${target.node}'`);
      if (!isValidName(target.node)) throw new AcpError('ACP_ERR_NAME_INVALID', `a migration goes to a node, not ${JSON.stringify(target.node)}`);
      const uri = migrationUri(target.address);
      // A fresh object per attempt (an earlier, failed one may still hold its id).
      migrations += 1;
      const tls = await loadCredentials(qmp, paths.runDir, credentials, 'client', `acp-migration-tls-${migrations}`);
      // The target must present the certificate of the node the hypervisor named, whatever address answers.
      await qmp.execute('migrate-set-parameters', { 'tls-creds': tls, 'tls-hostname': target.node });
      await qmp.execute('migrate', { uri });
      for (;;) {
        const state = (await qmp.execute('query-migrate')) as { status?: string; 'error-desc'?: string };
        if (state.status === 'completed') return;
        if (state.status === 'failed' || state.status === 'cancelled') {
          // The source guest carries on where it was.
          await qmp.execute('cont').catch(() => undefined);
          throw new AcpError('ACP_ERR_VMM_FAILED', `the migration ${state.status}${state['error-desc'] ? `: ${state['error-desc']}` : ''}`);
        }
        await new Promise((resolve) => setTimeout(resolve, MIGRATION_POLL_MS));
      }
    },
    async awaitRunning(timeoutMs) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const status = (await qmp.execute('query-status')) as { status?: string };
        if (status.status === 'running') return;
        if (Date.now() > until) throw new AcpError('ACP_ERR_VMM_FAILED', `the incoming guest is ${status.status ?? 'not running'} after ${timeoutMs} ms`);
        await new Promise((resolve) => setTimeout(resolve, MIGRATION_POLL_MS));
      }
    },
    transferable: () => null,
    consoleInput: (data) => writeSerial(serialSocket(paths.runDir), data),
    ...(paths.disks && paths.disks.length > 0
      ? {
          blockStats: async () => parseBlockStats(await qmp.execute('query-blockstats'), paths.disks ?? []),
          changeDisk: async (volume, change) => {
            const { command, args } = liveDiskCommand(paths.disks ?? [], volume, change);
            await qmp.execute(command, args, LIVE_DISK_MS);
          },
        }
      : {}),
    pause: async () => void (await qmp.execute('stop')),
    resume: async () => void (await qmp.execute('cont')),
    reset: async () => void (await qmp.execute('system_reset')),
    async stop(graceful, timeoutMs) {
      hooks.requested();
      if (graceful) {
        await qmp.execute('system_powerdown', undefined, 2000).catch(() => undefined);
        if ((await gone(timeoutMs)) === 'gone') return;
      }
      await qmp.execute('quit', undefined, 2000).catch(() => undefined);
      if ((await gone(2000)) === 'gone') return;
      // Hung or stopped (SIGSTOP): QEMU goes anyway.
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
      await exited;
      qmp.close();
    },
    release() {
      hooks.released();
      qmp.close();
    },
    exited: exited.then((exit) => {
      qmp.close();
      return exit;
    }),
  };
  return handle;
}

const SERIAL_WRITE_MS = 5000;

/** Writes to a guest's serial socket: connect, write, close (within SERIAL_WRITE_MS). */
function writeSerial(path: string, data: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new AcpError('ACP_ERR_VMM_FAILED', `the guest's serial port did not take the input within ${SERIAL_WRITE_MS} ms`));
    }, SERIAL_WRITE_MS);
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(new AcpError('ACP_ERR_VMM_FAILED', `cannot reach the guest's serial port: ${error.message}`));
    });
    socket.once('connect', () => {
      // QEMU sends the guest's output to whoever is connected: read and drop it (the log has it).
      socket.resume();
      socket.end(data, () => {
        clearTimeout(timer);
        resolve();
      });
    });
  });
}
