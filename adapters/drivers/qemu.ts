import { chmodSync, existsSync, mkdirSync, rmSync, symlinkSync } from 'node:fs';
import { connect, isIP } from 'node:net';
import { join } from 'node:path';
import { AcpError } from '../../runtime/errors.js';
import { isValidName } from '../../runtime/path.js';
import { liveDiskCommand, parseBlockStats } from './disks.js';
import { qemuArgs, serialSocket } from './qemu-args.js';
import { Qmp } from './qmp.js';
import { guestRunFiles, isGuestProcess, readGuestPid, startDirect, startUnderGuard, watchQemu } from './qemu-process.js';
import { vncSocket } from './vnc.js';
import { isMigrationHost, type GuestExit, type GuestHandle, type GuestSpec, type GuestPaths, type IncomingGuest, type MigrationAddress, type MigrationCredentials, type MigrationListen, type MigrationTarget, type SystemDriver } from './driver.js';

export { findGuest, guestRunFiles, killGuest, killHomeGuests } from './qemu-process.js';

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
