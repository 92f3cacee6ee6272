/**
 * The fence guard (adapters/fence-guard-main.ts) as a real process over real processes: fed, it
 * leaves its guests alone; not fed within its timeout, it kills them, also after the daemon's end
 * of its pipe closed (the daemon died); it never kills a recycled pid (the start time differs);
 * disarmed, it kills nothing; it runs in a process group of its own.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isProcessAlive } from '../adapters/process.js';
import { FenceGuard } from '../adapters/fence-guard.js';
import { startTimeOf } from '../adapters/proc-stat.js';

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

function setup(t: { teardown(fn: () => void | Promise<void>): void }): { guard: FenceGuard; log: string } {
  const dir = mkdtempSync(join(tmpdir(), 'acp-guard-'));
  const log = join(dir, 'guard.log');
  const guard = new FenceGuard({ logFile: log });
  t.teardown(async () => {
    const pid = guard.pid;
    await Promise.race([guard.stop(), sleep(2000)]);
    if (pid !== null && isProcessAlive(pid)) process.kill(pid, 'SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  return { guard, log };
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
