/**
 * The fence guard (adapters/fence-guard-main.ts) as a real process over real processes: fed, it
 * leaves its guests alone; not fed within its timeout, it kills them, also after the daemon's end
 * of its pipe closed (the daemon died); it never kills a recycled pid (the start time differs);
 * disarmed, it kills nothing; it runs in a process group of its own.
 *
 * Its spawn channel (adapters/fence-guard-spawner.ts) over its real socket: bad requests are
 * refused with a code and the guard carries on; unarmed it starts nothing; it starts real QEMU (and
 * only QEMU) as its own child, which dies the moment the guard is killed; it reaps its children and
 * kills them when it fires; a guard whose daemon is gone hands the socket to the next one.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isProcessAlive } from '../adapters/process.js';
import { FenceGuard } from '../adapters/fence-guard.js';
import { parentOf, startTimeOf } from '../adapters/proc-stat.js';
import { spawnUnderGuard } from '../adapters/fence-guard-client.js';
import { fenceGuardSocket, guardedGuestDir } from '../adapters/fence-guard-protocol.js';
import { findProgram } from '../adapters/fence-guard-spawner.js';
import { QEMU_BINARY } from '../adapters/drivers/qemu-args.js';
import { AcpError } from '../runtime/errors.js';
import { qemuMissing, runsWhen } from './helpers/requires.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function guest(t: { teardown(fn: () => void): void }): ChildProcess & { pid: number } {
  const child = spawn('sleep', ['60'], { stdio: 'ignore' });
  t.teardown(() => child.kill('SIGKILL'));
  if (child.pid === undefined) throw new Error('sleep did not start');
  return child as ChildProcess & { pid: number };
}

async function until(check: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (check()) return true;
    await sleep(50);
  }
  return check();
}

function setup(t: { teardown(fn: () => void | Promise<void>): void }, options: { run?: boolean; watchdog?: string } = {}): { guard: FenceGuard; log: string; run: string } {
  const dir = mkdtempSync(join(tmpdir(), 'acp-guard-'));
  const log = join(dir, 'guard.log');
  const run = join(dir, 'run');
  mkdirSync(run, { mode: 0o700 });
  const guard = new FenceGuard({ logFile: log, ...(options.run ? { runDir: run } : {}), watchdog: options.watchdog });
  t.teardown(async () => {
    const pid = guard.pid;
    await Promise.race([guard.stop(), sleep(2000)]);
    if (pid !== null && isProcessAlive(pid)) process.kill(pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  return { guard, log, run };
}

const exited = (child: ChildProcess) => child.exitCode !== null || child.signalCode !== null;

test('fed in time it leaves the guests alone; not fed, it kills them with SIGKILL within its timeout', async (t) => {
  const { guard, log } = setup(t);
  const a = guest(t);
  for (let i = 0; i < 8; i += 1) {
    guard.feed(600, [a.pid]);
    await sleep(200);
  }
  t.false(exited(a), 'a fed guard killed its guest');
  const stopped = Date.now();
  t.true(await until(() => exited(a), 3000), 'the guest still runs 3 s after the last feed');
  t.log(`guest killed ${Date.now() - stopped} ms after the last feed (timeout 600 ms)`);
  t.is(a.signalCode, 'SIGKILL');
  t.regex(readFileSync(log, 'utf8'), new RegExp(`"event":"fired","killed":\\[${a.pid}\\]`));
});

test('it fires after the daemon side of its pipe closed, runs in its own process group, and then exits', async (t) => {
  const { guard } = setup(t);
  const a = guest(t);
  guard.feed(800, [a.pid]);
  await sleep(100);
  const pid = guard.pid!;
  t.is(Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[2]), pid, 'the guard leads its own process group');
  // What the daemon's death does to the pipe: its end closes.
  (guard as unknown as { child: ChildProcess }).child.stdin!.end();
  t.true(await until(() => exited(a), 3000), 'the guest survived a guard whose daemon died');
  t.true(await until(() => !isProcessAlive(pid), 3000), 'the guard did not exit after firing with its pipe closed');
});

test('it never kills a process whose start time differs (a recycled pid), and kills nothing once disarmed', async (t) => {
  const { guard, log } = setup(t);
  const a = guest(t);
  const b = guest(t);
  t.truthy(startTimeOf(a.pid));
  // A feed naming a's pid with a start time it does not have: as if the pid were recycled.
  guard.start();
  (guard as unknown as { write(line: object): void }).write({ type: 'feed', timeoutMs: 300, guests: [{ pid: a.pid, start: '1' }] });
  await sleep(1000);
  t.false(exited(a), 'a process with another start time was killed');
  guard.feed(300, [b.pid]);
  guard.disarm();
  await sleep(1000);
  t.false(exited(b), 'a disarmed guard killed its guest');
  t.regex(readFileSync(log, 'utf8'), /"event":"disarmed"/);
});

test('bad lines are reported and ignored', async (t) => {
  const { guard, log } = setup(t);
  guard.start();
  (guard as unknown as { write(line: object): void }).write({ type: 'feed', timeoutMs: 5, guests: [] });
  t.true(await until(() => /"event":"bad-line"/.test(readFileSync(log, 'utf8')), 5000), 'no bad-line event logged');
});

// ---------------------------------------------------------------------------------------------
// The spawn channel.

/** Sends one raw line to the guard's socket; its answer, parsed. */
function rawAsk(socket: string, line: string): Promise<{ ok: boolean; code?: string; error?: string }> {
  return new Promise((resolve, reject) => {
    const client = connect(socket);
    let buffered = '';
    client.setEncoding('utf8');
    client.on('connect', () => client.write(line));
    client.on('data', (chunk: string) => {
      buffered += chunk;
    });
    // The guard may answer and close while a long line is still being written (EPIPE here): the
    // answer already read is what counts, so an error only decides when nothing was read.
    let failure: Error | null = null;
    client.on('error', (error) => {
      failure = error;
    });
    client.on('close', () => {
      try {
        resolve(JSON.parse(buffered.split('\n')[0]!) as { ok: boolean; code?: string; error?: string });
      } catch {
        reject(new Error(`not a JSON answer: ${JSON.stringify(buffered.slice(0, 200))}${failure === null ? '' : ` (${(failure as Error).message})`}`));
      }
    });
  });
}

/** A running guard with its spawn channel up (its socket answers). */
async function channel(t: ExecutionContext, feed = true) {
  const set = setup(t, { run: true });
  if (feed) set.guard.feed(60_000, []);
  else set.guard.start();
  const socket = fenceGuardSocket(set.run);
  t.true(await until(() => existsSync(socket), 10_000), 'the guard never opened its socket');
  return { ...set, socket };
}

/** QEMU's arguments for an idle machine of system `id` in `run` (no guest, no CPU to speak of). */
function idleQemu(run: string, id: string): string[] {
  const dir = guardedGuestDir(run, id);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return ['-name', `acp-${id}`, '-machine', 'none', '-nodefaults', '-no-user-config', '-display', 'none', '-qmp', `unix:${join(dir, 'qmp.sock')},server=on,wait=off`, '-pidfile', join(dir, 'qemu.pid')];
}

async function refusedWith(request: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await request;
  } catch (error) {
    if (error instanceof AcpError) return { code: error.code, message: error.message };
    throw error;
  }
  throw new Error('the guard did what it had to refuse');
}

const gone = (pid: number) => startTimeOf(pid) === null;

const qemuAbsent = qemuMissing();
const setprivMissing = findProgram('setpriv') === null ? 'setpriv is not installed (apt-get install util-linux)' : undefined;

test('its spawn channel refuses bad requests, each with a code and a reason, and the guard carries on', async (t) => {
  const { guard, log, run, socket } = await channel(t);
  const dir = guardedGuestDir(run, 'good');
  const args = idleQemu(run, 'good');
  const notJson = await rawAsk(socket, 'spawn qemu please\n');
  t.is(notJson.code, 'ACP_ERR_HA_GUARD_REFUSED');
  t.regex(notJson.error!, /not JSON/);
  // No program can be named: the request schema has no field for one.
  const program = await rawAsk(socket, `${JSON.stringify({ type: 'spawn', system: 'good', argv: args, binary: '/bin/sh' })}\n`);
  t.is(program.code, 'ACP_ERR_HA_GUARD_REFUSED');
  t.regex(program.error!, /binary/);
  const shell = await rawAsk(socket, `${JSON.stringify({ type: 'spawn', system: 'good', argv: 'sh -c id' })}\n`);
  t.is(shell.code, 'ACP_ERR_HA_GUARD_REFUSED');
  const homeless = idleQemu(run, 'nodir');
  rmSync(guardedGuestDir(run, 'nodir'), { recursive: true });
  const cases: [string, string[], RegExp][] = [
    ['../etc', args, /system: must be a system name/],
    ['good', [...args, '-daemonize'], /-daemonize/],
    ['good', args.map((arg) => (arg === 'acp-good' ? 'acp-other' : arg)), /-name acp-good/],
    ['good', [...args, '-name', 'acp-good'], /-name acp-good/],
    ['good', args.map((arg) => (arg.endsWith('qemu.pid') ? '/tmp/elsewhere.pid' : arg)), /-pidfile/],
    ['nodir', homeless, /has no run dir/],
    ['good', [...args, 'with\0nul'], /NUL/],
  ];
  for (const [system, argv, why] of cases) {
    const refused = await refusedWith(spawnUnderGuard(socket, { system, argv }));
    t.is(refused.code, 'ACP_ERR_HA_GUARD_REFUSED', `${system} ${argv.join(' ')}`);
    t.regex(refused.message, why);
  }
  // A line that never ends is cut off at its bound.
  const endless = await rawAsk(socket, 'x'.repeat(1024 * 1024 + 10));
  t.is(endless.code, 'ACP_ERR_HA_GUARD_REFUSED');
  t.false(existsSync(join(dir, 'qemu.pid')), 'something was started');
  t.true(isProcessAlive(guard.pid!), 'a bad request took the guard down');
  t.regex(readFileSync(log, 'utf8'), /"event":"spawn-refused"/);
});

test('unarmed (no HA lease), it starts no guest; a guard started anew gets the last feed at once', async (t) => {
  const { guard, run, socket } = await channel(t, false);
  const refused = await refusedWith(spawnUnderGuard(socket, { system: 'idle', argv: idleQemu(run, 'idle') }));
  t.is(refused.code, 'ACP_ERR_HA_GUARD_REFUSED');
  t.regex(refused.message, /not armed/);
  // Fed, then its guard killed: the next start replaces it, armed with what is left of that feed.
  guard.feed(60_000, []);
  const first = guard.pid!;
  process.kill(first, 'SIGKILL');
  t.true(await until(() => !isProcessAlive(first), 5000));
  await sleep(100);
  guard.start();
  t.not(guard.pid, first);
  const missing = await refusedWith(spawnUnderGuard(socket, { system: 'idle', argv: [...idleQemu(run, 'idle'), '-daemonize'] }));
  t.regex(missing.message, /-daemonize/, 'the new guard answered as an armed one');
});

runsWhen(qemuAbsent ?? setprivMissing)('it starts only QEMU, as its own child under a parent-death signal: killed with the guard, reaped when it ends, killed when it fires', async (t) => {
  const { guard, log, run, socket } = await channel(t);
  const spawned: number[] = [];
  t.teardown(() => {
    for (const pid of spawned) if (!gone(pid)) process.kill(pid, 'SIGKILL');
  });
  const { pid, guard: guardPid } = await spawnUnderGuard(socket, { system: 'vm1', argv: idleQemu(run, 'vm1') });
  spawned.push(pid);
  t.is<number | null, number | null>(guardPid, guard.pid);
  t.is(parentOf(pid), guard.pid, "QEMU is the guard's child");
  // setpriv sets the parent-death signal and then execs QEMU in the same process; the guard answers only after that exec.
  const qemuExe = realpathSync(findProgram(QEMU_BINARY)!);
  t.is(readlinkSync(`/proc/${pid}/exe`), qemuExe, 'what runs when the guard answers is QEMU itself (setpriv exec’d it)');
  // QEMU creates its pid file before it writes the number: wait for the number, not the file.
  const pidFile = join(guardedGuestDir(run, 'vm1'), 'qemu.pid');
  const written = () => (existsSync(pidFile) ? readFileSync(pidFile, 'utf8').trim() : '');
  t.true(await until(() => written() !== '', 10_000), 'QEMU wrote its pid file');
  t.is(Number(written()), pid);

  // Ended by someone else: the guard reaps it (no zombie left) and logs it.
  process.kill(pid, 'SIGKILL');
  t.true(await until(() => gone(pid), 5000), 'the killed QEMU was left a zombie');
  t.true(await until(() => readFileSync(log, 'utf8').includes(`"event":"child-exited","system":"vm1","child":${pid}`), 5000));

  // Not fed in time: it fires, and kills its own children too (not only the pids it was fed).
  const second = await spawnUnderGuard(socket, { system: 'vm1', argv: idleQemu(run, 'vm1') });
  spawned.push(second.pid);
  guard.feed(400, []);
  t.true(await until(() => gone(second.pid), 5000), 'a guard that fired left its QEMU running');
  t.regex(readFileSync(log, 'utf8'), new RegExp(`"event":"fired","killed":\\[${second.pid}\\]`));

  // kill -9 of the guard: the kernel kills its QEMU at once.
  guard.feed(60_000, []);
  const third = await spawnUnderGuard(socket, { system: 'vm1', argv: idleQemu(run, 'vm1') });
  spawned.push(third.pid);
  // Answered after setpriv exec'd QEMU, so the parent-death signal is set: killing the guard right away must take QEMU with it.
  t.is(readlinkSync(`/proc/${third.pid}/exe`), qemuExe);
  process.kill(guard.pid!, 'SIGKILL');
  t.true(await until(() => gone(third.pid), 5000), 'QEMU outlived its guard');
});

runsWhen(qemuAbsent ?? setprivMissing)('a guard whose daemon is gone takes no more guests, leaves the socket to the next guard, fires at its time and exits once its child is reaped', async (t) => {
  const old = await channel(t);
  const spawned: number[] = [];
  t.teardown(() => {
    for (const pid of spawned) if (!gone(pid)) process.kill(pid, 'SIGKILL');
  });
  old.guard.feed(2500, []);
  const child = await spawnUnderGuard(old.socket, { system: 'vm2', argv: idleQemu(old.run, 'vm2') });
  spawned.push(child.pid);
  const oldPid = old.guard.pid!;
  // The daemon dies (its end of the pipe closes) and a new daemon starts its own guard on the same run dir.
  old.guard.release();
  const next = new FenceGuard({ logFile: old.log, runDir: old.run });
  t.teardown(async () => {
    const pid = next.pid;
    await Promise.race([next.stop(), sleep(2000)]);
    if (pid !== null && isProcessAlive(pid)) process.kill(pid, 'SIGKILL');
  });
  next.feed(60_000, []);
  t.true(await until(() => readFileSync(old.log, 'utf8').includes(`"pid":${next.pid},"event":"started"`), 10_000), 'the new guard did not start');
  t.true(isProcessAlive(oldPid), 'the old guard left before its time, its child unguarded');
  t.true(isProcessAlive(child.pid), 'the old guard killed its child before its time');
  const answered = await spawnUnderGuard(old.socket, { system: 'vm3', argv: idleQemu(old.run, 'vm3') });
  spawned.push(answered.pid);
  t.is<number | null, number | null>(answered.guard, next.pid, 'the socket is the new guard’s');
  t.true(await until(() => gone(child.pid), 10_000), 'the old guard never fired');
  t.true(await until(() => !isProcessAlive(oldPid), 10_000), 'the old guard did not exit after firing');
  t.true(existsSync(old.socket), "the old guard took the new guard's socket with it");
  t.false(gone(answered.pid), "the old guard killed the new guard's child");
  t.regex(readFileSync(old.log, 'utf8'), new RegExp(`"pid":${oldPid},"event":"fired","killed":\\[${child.pid}\\]`));
});

test('without setpriv, or without QEMU, it refuses an HA start saying what to install', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'acp-guard-path-'));
  const run = join(dir, 'run');
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  mkdirSync(run, { mode: 0o700 });
  const children: ChildProcess[] = [];
  t.teardown(() => {
    for (const child of children) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  const main = fileURLToPath(new URL('../adapters/fence-guard-main.js', import.meta.url));
  /** A guard whose PATH is `bin` only (and whose QEMU is `qemu`): fed, its socket up. */
  const guardWith = async (qemu: string) => {
    rmSync(fenceGuardSocket(run), { force: true });
    const child = spawn(process.execPath, [main, '--run', run], { stdio: ['pipe', 'ignore', 'ignore'], env: { PATH: bin, ACP_QEMU: qemu } });
    children.push(child);
    child.stdin!.write(`${JSON.stringify({ type: 'feed', timeoutMs: 60_000, guests: [] })}\n`);
    t.true(await until(() => existsSync(fenceGuardSocket(run)), 10_000), 'the guard never opened its socket');
    return child;
  };
  const first = await guardWith('qemu-system-x86_64');
  const noSetpriv = await refusedWith(spawnUnderGuard(fenceGuardSocket(run), { system: 'vm', argv: idleQemu(run, 'vm') }));
  t.is(noSetpriv.code, 'ACP_ERR_HA_SETPRIV_MISSING');
  t.regex(noSetpriv.message, /install util-linux/);
  first.kill('SIGKILL');
  const setpriv = findProgram('setpriv');
  if (setpriv !== null) symlinkSync(setpriv, join(bin, 'setpriv'));
  await guardWith('no-such-qemu');
  const noQemu = await refusedWith(spawnUnderGuard(fenceGuardSocket(run), { system: 'vm', argv: idleQemu(run, 'vm') }));
  t.is(noQemu.code, setpriv === null ? 'ACP_ERR_HA_SETPRIV_MISSING' : 'ACP_ERR_DRIVER_MISSING');
  if (setpriv !== null) t.regex(noQemu.message, /no-such-qemu is not installed on this node: install qemu-system-x86/);
});

test('a watchdog is opened when the guard is armed, kept alive while it is, and closed with the magic V on a disarm and when it fires', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'acp-watchdog-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // A file stands in for the device: every keep-alive is a byte, the magic close a 'V'.
  const device = join(dir, 'watchdog');
  writeFileSync(device, '');
  const { guard, log } = setup(t, { watchdog: device });
  const a = guest(t);
  guard.start();
  await sleep(500);
  t.is(readFileSync(device, 'utf8'), '', 'not armed: the watchdog is not touched');
  for (let i = 0; i < 5; i += 1) {
    guard.feed(2000, [a.pid]);
    await sleep(200);
  }
  // The guard reads its pipe in its own process: under load the five feeds may still be queued.
  t.true(await until(() => readFileSync(device, 'utf8').length >= 5, 5000), 'kept alive while armed');
  t.false(readFileSync(device, 'utf8').includes('V'));
  guard.disarm();
  t.true(await until(() => readFileSync(device, 'utf8').endsWith('V'), 3000), 'a disarm closes it with V');
  const afterDisarm = readFileSync(device, 'utf8').length;
  await sleep(400);
  t.is(readFileSync(device, 'utf8').length, afterDisarm, 'nothing written once disarmed');
  // Armed again, then not fed: it fires, kills the guest and closes the watchdog.
  guard.feed(400, [a.pid]);
  t.true(await until(() => exited(a), 3000));
  t.true(await until(() => readFileSync(device, 'utf8').length > afterDisarm + 1 && readFileSync(device, 'utf8').endsWith('V'), 3000), 'fired: closed with V');
  t.regex(readFileSync(log, 'utf8'), /"event":"watchdog-closed".*"why":"fired/);
});

test('a watchdog that cannot be opened is reported, and the guard still fires', async (t) => {
  const { guard, log } = setup(t, { watchdog: '/nonexistent/watchdog' });
  const a = guest(t);
  guard.feed(400, [a.pid]);
  t.true(await until(() => exited(a), 3000));
  t.regex(readFileSync(log, 'utf8'), /"event":"watchdog-unavailable","path":"\/nonexistent\/watchdog","error":"ENOENT"/);
});
