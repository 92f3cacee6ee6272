/**
 * The system restart policy (actors/hypervisor/restart.ts) on a simulated clock: the backoff
 * between tries, the intensity limit, a restart that moved on, and a restart refused before it ran,
 * with no real time passing. The entries and the start are plain fakes: this is the policy's logic.
 */
import test from 'ava';
import type { Running, SystemMeta } from '../actors/hypervisor/schema.js';
import { BACKOFF, MAX_RESTARTS, RestartPolicy, WITHIN_MS } from '../actors/hypervisor/restart.js';
import type { SystemEvent } from '../actors/hypervisor/lifecycle.js';
import { next } from '../actors/hypervisor/lifecycle.js';
import type { Reply } from '../actors/hypervisor/io.js';
import { systemObjectSchema } from '../actors/model.js';
import { AcpError } from '../runtime/errors.js';
import type { Logger } from '../runtime/logger.js';
import { SimClock } from '../runtime/sim.js';

const quiet = { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined } as unknown as Logger;

function world(options: { restart?: 'always' | 'on-crash' | 'never'; ha?: boolean; seed?: number } = {}) {
  const clock = new SimClock({ seed: options.seed ?? 7 });
  const due: { at: number; attempt: number }[] = [];
  const starts: Reply[] = [];
  const cleaned: string[] = [];
  const spec = systemObjectSchema.parse({ name: 'r1', driver: 'sim', restart: options.restart ?? 'always', ...(options.ha ? { ha: true } : {}) });
  const entry: Running = { state: 'running', spec, meta: { state: 'running', node: 'n1', pid: null, vmmPid: null, accelerator: 'sim', since: '', restarts: 0 }, restarts: [], attempt: 0, retry: undefined, epoch: 1 };
  const move = (_id: string, moved: Running, event: SystemEvent, extra: Partial<SystemMeta> = {}) => {
    moved.state = next('r1', moved.state, event);
    moved.meta = { ...moved.meta, ...extra, state: moved.state };
  };
  const policy: RestartPolicy = new RestartPolicy({
    log: quiet,
    clock,
    tell: (message) => {
      due.push({ at: clock.now(), attempt: message.attempt });
      policy.due(message.id, message.attempt);
    },
    entryFor: (id) => (id === 'r1' ? entry : undefined),
    move,
    publish: () => undefined,
    start: (_id, reply) => {
      starts.push(reply);
      move('r1', entry, 'start');
    },
    cleanUp: (id) => cleaned.push(id),
    dropArrival: () => undefined,
  });
  /** The start the policy made comes up (running again). */
  const comesUp = () => {
    move('r1', entry, 'started');
    starts.at(-1)!.ok({ type: 'system.started' });
  };
  return { clock, due, starts, cleaned, entry, policy, comesUp };
}

test('a crash is restarted after the first backoff (500 ms ± 20 %), on the clock, and its VMM cleaned up at once', (t) => {
  const { clock, due, starts, cleaned, entry, policy } = world();
  policy.gone('r1', true, 'guest panicked');
  t.is(entry.state, 'crashed');
  t.deepEqual(cleaned, ['r1']);
  clock.advance(BACKOFF.initialMs * (1 - BACKOFF.jitter) - 1);
  t.is(starts.length, 0, 'not before the backoff');
  clock.advance(BACKOFF.initialMs * 2 * BACKOFF.jitter + 1);
  t.is(starts.length, 1);
  t.is(due[0]!.attempt, 1);
  t.true(due[0]!.at >= 400 && due[0]!.at <= 600, `due at ${due[0]!.at}`);
  t.is(entry.state, 'starting');
});

test('crashes in a row back off longer each time; the fourth within the window leaves it crashed with the reason', (t) => {
  const { clock, due, starts, entry, policy, comesUp } = world({ seed: 3 });
  for (let crash = 1; crash <= MAX_RESTARTS; crash += 1) {
    policy.gone('r1', true, `crash ${crash}`);
    clock.advance(10_000);
    t.is(starts.length, crash);
    comesUp();
  }
  const gaps = due.map((fired, index) => fired.at - index * 10_000);
  t.true(gaps[0]! < gaps[1]! && gaps[1]! < gaps[2]!, `backoffs grow: ${gaps.join(', ')}`);
  policy.gone('r1', true, 'crash 4');
  clock.advance(WITHIN_MS);
  t.is(starts.length, MAX_RESTARTS, 'no fourth restart within the window');
  t.is(entry.state, 'crashed');
  t.regex(String(entry.meta.reason), /restarted 3 times within 60 s, so it stays crashed/);
});

test('after the window has passed, a crash is restarted again', (t) => {
  const { clock, starts, policy, comesUp } = world();
  for (let crash = 1; crash <= MAX_RESTARTS; crash += 1) {
    policy.gone('r1', true, 'crash');
    clock.advance(1000 * 2 ** crash);
    comesUp();
  }
  clock.advance(WITHIN_MS);
  policy.gone('r1', true, 'crash after a quiet minute');
  clock.advance(10_000);
  t.is(starts.length, MAX_RESTARTS + 1);
});

test('a restart that is due after the system moved on (stopped by hand, started again) is dropped', (t) => {
  const { clock, starts, entry, policy } = world();
  policy.gone('r1', true, 'guest panicked');
  // Stopped by hand: the stop cancels the timer; a due message already sent still finds nothing to do.
  entry.retry?.();
  entry.state = 'running';
  clock.advance(10_000);
  policy.due('r1', entry.attempt);
  t.is(starts.length, 0);
});

test('a restart refused before it ran (the CDB away) leaves it crashed, and the policy tries again after a longer backoff', (t) => {
  const { clock, starts, entry, policy } = world();
  policy.gone('r1', true, 'guest panicked');
  clock.advance(1000);
  t.is(starts.length, 1);
  // Refused in its prepare, before anything moved: it is still crashed (the fake start had moved it).
  entry.state = 'crashed';
  starts[0]!.fail(new AcpError('ACP_ERR_ASK_TIMEOUT', 'no reply from cdb'));
  t.is(entry.attempt, 2);
  clock.advance(1500);
  t.is(starts.length, 2);
});

test('the policy leaves alone: never, on-crash after a clean exit, and HA systems (the HA manager restarts those)', (t) => {
  for (const [options, crashed] of [[{ restart: 'never' as const }, true], [{ restart: 'on-crash' as const }, false], [{ ha: true }, true]] as const) {
    const { clock, starts, entry, policy } = world(options);
    policy.gone('r1', crashed, 'gone');
    clock.advance(WITHIN_MS);
    t.is(starts.length, 0, JSON.stringify(options));
    t.is(entry.state, crashed ? 'crashed' : 'stopped');
  }
});

test('a guest that powers off before its start was answered (still starting) is crashed, as the state table allows, and a clean exit is not restarted on-crash', (t) => {
  const { clock, starts, entry, policy } = world({ restart: 'on-crash' });
  entry.state = 'starting';
  policy.gone('r1', false, 'powered off');
  t.is(entry.state as string, 'crashed');
  t.is(entry.meta.reason, 'powered off');
  clock.advance(WITHIN_MS);
  t.is(starts.length, 0);
});
