import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { connect, isIP, type Socket } from 'node:net';
import { release, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { AcpError, errorMessage } from '../../runtime/errors.js';
import { isValidName } from '../../runtime/path.js';
import { generatedMac, tapName } from '../interface-names.js';
import { diskArgs, liveDiskCommand, parseBlockStats } from './disks.js';
import { vncSocket } from './vnc.js';
import { isMigrationHost, type GuestExit, type GuestHandle, type GuestSpec, type GuestPaths, type IncomingGuest, type MigrationAddress, type MigrationCredentials, type MigrationListen, type MigrationTarget, type SystemDriver } from './driver.js';

export const QEMU_BINARY = process.env.ACP_QEMU ?? 'qemu-system-x86_64';
const QMP_CONNECT_MS = 10_000;
const QMP_COMMAND_MS = 5000;
/** A live resize or internal snapshot writes the image's metadata (a snapshot copies its tables): longer than a query. */
const LIVE_DISK_MS = 60_000;

/** QEMU option values separate with commas: a comma inside a path is written twice. */
function optionValue(text: string): string {
  return text.replace(/,/g, ',,');
}

/**
 * A QMP client on QEMU's Unix socket: JSON lines; every command carries an id that its answer
 * echoes, and has a deadline (a hung QEMU must not hang its VMM); asynchronous events are skipped.
 */
class Qmp {
  private buffer = '';
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void; timer: NodeJS.Timeout }>();
  private greeted: (() => void) | undefined;
  private closedError: Error | undefined;
  private resolveClosed: () => void = () => undefined;
  /** Settles when the connection closes (QEMU exited, or this end closed it). */
  readonly closed = new Promise<void>((resolve) => {
    this.resolveClosed = resolve;
  });
  /** QMP's SHUTDOWN event, once QEMU sent it: `guest` when the guest powered itself off. */
  shutdown: { guest: boolean } | undefined;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.data(chunk));
    socket.on('close', () => {
      this.fail(new AcpError('ACP_ERR_VMM_FAILED', 'the QMP connection to QEMU closed'));
      this.resolveClosed();
    });
    socket.on('error', (error) => this.fail(new AcpError('ACP_ERR_VMM_FAILED', `QMP: ${error.message}`)));
  }

  static async open(path: string, until: number): Promise<Qmp> {
    for (;;) {
      let qmp: Qmp | undefined;
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const attempt = connect(path, () => resolve(attempt));
          attempt.once('error', reject);
        });
        const opened = new Qmp(socket);
        qmp = opened;
        // The greeting first, then capabilities negotiation.
        await new Promise<void>((resolve, reject) => {
          opened.greeted = resolve;
          setTimeout(() => reject(new Error('no QMP greeting')), 5000).unref();
        });
        await opened.execute('qmp_capabilities');
        return opened;
      } catch (error) {
        qmp?.close();
        if (Date.now() > until) throw new AcpError('ACP_ERR_VMM_FAILED', `QEMU's QMP socket ${path} did not answer: ${errorMessage(error)}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  }

  execute(command: string, args?: Record<string, unknown>, timeoutMs = QMP_COMMAND_MS): Promise<unknown> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new AcpError('ACP_ERR_VMM_FAILED', `QEMU did not answer '${command}' within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting.set(id, { resolve, reject, timer });
      this.socket.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`);
    });
  }

  close(): void {
    this.socket.destroy();
  }

  private data(chunk: string): void {
    this.buffer += chunk;
    let newline: number;
    while ((newline = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (!line) continue;
      let message: { event?: string; data?: { guest?: unknown }; return?: unknown; error?: { desc?: string }; QMP?: unknown; id?: unknown };
      try {
        message = JSON.parse(line) as typeof message;
      } catch {
        this.socket.destroy(new Error(`QEMU sent a line that is not JSON: ${line.slice(0, 80)}`));
        return;
      }
      if (message.QMP !== undefined) {
        this.greeted?.();
        continue;
      }
      if (message.event === 'SHUTDOWN') this.shutdown = { guest: message.data?.guest === true };
      if (message.event !== undefined || typeof message.id !== 'number') continue;
      const waiter = this.waiting.get(message.id);
      if (!waiter) continue;
      this.waiting.delete(message.id);
      clearTimeout(waiter.timer);
      if (message.error) waiter.reject(new AcpError('ACP_ERR_VMM_FAILED', `QEMU refused: ${message.error.desc ?? 'an error'}`));
      else waiter.resolve(message.return);
    }
  }

  private fail(error: Error): void {
    this.closedError ??= error;
    for (const waiter of this.waiting.values()) {
      clearTimeout(waiter.timer);
      waiter.reject(error);
    }
    this.waiting.clear();
  }
}

/** Where a guest's serial port listens (QEMU is the server; one client at a time). */
export function serialSocket(runDir: string): string {
  return join(runDir, 'serial.sock');
}

/**
 * The QEMU command line for a system: the serial port on a Unix socket (input from the console's
 * users) with everything the guest prints logged to the console file whether or not anyone is
 * connected, QMP on a Unix socket; no display, or with `display: 'vnc'` a VGA card and a VNC
 * server on a Unix socket in the run dir (no TCP port: only this node's web API reaches it).
 */
export function qemuArgs(id: string, spec: GuestSpec, paths: GuestPaths, accelerator: 'kvm' | 'tcg', incoming?: string): string[] {
  const args = [
    '-name',
    `acp-${id}`,
    '-machine',
    `pc,accel=${accelerator}`,
    '-m',
    String(spec.memoryMiB),
    '-smp',
    String(spec.vcpus),
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-chardev',
    `socket,id=console,path=${optionValue(serialSocket(paths.runDir))},server=on,wait=off,logfile=${optionValue(paths.consoleLog)}`,
    '-serial',
    'chardev:console',
    '-qmp',
    `unix:${optionValue(join(paths.runDir, 'qmp.sock'))},server=on,wait=off`,
  ];
  if (spec.display === 'vnc') args.push('-device', 'VGA', '-vnc', `unix:${optionValue(vncSocket(paths.runDir))}`);
  if (spec.boot && 'kernel' in spec.boot) {
    args.push('-kernel', spec.boot.kernel);
    if (spec.boot.initrd) args.push('-initrd', spec.boot.initrd);
    args.push('-append', spec.boot.cmdline ?? 'console=ttyS0 quiet');
  } else if (spec.boot && 'disk' in spec.boot && spec.boot.disk.startsWith('/')) {
    // An image file named by path (before pools); `POOL/VOLUME` is one of its disks, booted first.
    args.push('-drive', `file=${optionValue(spec.boot.disk)},if=virtio,format=qcow2`);
  }
  args.push(...diskArgs(paths.disks ?? [], paths.cdrom));
  args.push(...nicArgs(id, spec));
  if (incoming) args.push('-incoming', incoming);
  return args;
}

/**
 * Each NIC: the tap the Network service made for it (named from the system's id and the NIC's
 * index, checked there), opened by QEMU with no scripts, and the guest's device with its MAC.
 */
export function nicArgs(id: string, spec: GuestSpec): string[] {
  return spec.nics.flatMap((nic, index) => [
    '-netdev',
    `tap,id=net${index},ifname=${tapName(id, index)},script=no,downscript=no`,
    '-device',
    `${nic.model === 'e1000' ? 'e1000' : 'virtio-net-pci'},netdev=net${index},mac=${nic.mac ?? generatedMac(id, index)}`,
  ]);
}

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

/**
 * Starts QEMU (for an incoming migration: waiting for it, `-incoming defer`) and connects QMP.
 * QEMU runs in a session of its own (setsid), with its pid file, QMP socket and stderr in the
 * guest's run dir: it outlives its VMM container and the daemon, and a later VMM adopts it.
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
  const log = openSync(files.log, 'w', 0o600);
  let child: ChildProcess;
  try {
    child = spawn(QEMU_BINARY, [...qemuArgs(id, spec, paths, accelerator, incoming ? 'defer' : undefined), '-pidfile', files.pidfile], { stdio: ['ignore', 'ignore', log], detached: true });
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
  let qmp: Qmp;
  try {
    qmp = await Promise.race([
      Qmp.open(files.qmp, Date.now() + QMP_CONNECT_MS),
      exited.then((exit) => {
        throw new AcpError('ACP_ERR_VMM_FAILED', `${exit.reason}`);
      }),
    ]);
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  const handle = guestHandle(qmp, child.pid!, accelerator, paths, exited, {
    requested: () => {
      requested = true;
    },
    // Let go of: this VMM no longer waits for its child (which goes on in its own session).
    released: () => child.unref(),
  });
  return { handle, qmp };
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
    let requested = false;
    let released = false;
    const exited = qmp.closed.then(async (): Promise<GuestExit> => {
      // Let go of (the daemon goes, the guest stays): this handle's guest never ends for it.
      if (released) return new Promise<GuestExit>(() => undefined);
      for (let tries = 0; tries < 100 && pidAlive(pid); tries += 1) await new Promise((resolve) => setTimeout(resolve, 50));
      const line = lastLogLine(files.log);
      const byGuest = qmp.shutdown?.guest === true;
      return { crashed: !requested && !byGuest, reason: `QEMU (adopted, pid ${pid}) ${byGuest ? 'powered off' : requested ? 'stopped' : 'ended'}${line ? `: ${line}` : ''}` };
    });
    const handle = guestHandle(qmp, pid, kvm.enabled ? 'kvm' : 'tcg', paths, exited, {
      requested: () => {
        requested = true;
      },
      released: () => {
        released = true;
      },
    });
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
