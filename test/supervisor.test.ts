import test, { type ExecutionContext } from 'ava';
import { AcpError, type ErrorCode } from '../runtime/errors.js';
import { SimClock } from '../runtime/sim.js';
import { restartDelay } from '../supervisors/backoff.js';
import { checkIntensity } from '../supervisors/intensity.js';
import { parseChildSpec, parseFlags } from '../supervisors/spec.js';
import { Supervisor, type ChildState, type SupervisorEnv, type SupervisorEvent } from '../supervisors/supervisor.js';

/** A deterministic world for a supervisor: a fake clock, fixed randomness, and a log of everything. */
class FakeEnv implements SupervisorEnv {
  readonly log: string[] = [];
  readonly events: SupervisorEvent[] = [];
  readonly escalations: AcpError[] = [];
  /** How many more times start(id) rejects; Infinity for always. */
  readonly failStarts = new Map<string, number>();
  private readonly clock = new SimClock();
  supervisor: Supervisor | undefined;
  randomValue = 0.5;

  now(): number {
    return this.clock.now();
  }

  random(): number {
    return this.randomValue;
  }

  setTimer(ms: number, fn: () => void): () => void {
    return this.clock.setTimer(ms, fn);
  }

  async start(id: string): Promise<void> {
    this.log.push(`start ${id}`);
    const failures = this.failStarts.get(id) ?? 0;
    if (failures > 0) {
      this.failStarts.set(id, failures - 1);
      throw new Error(`cannot start ${id}`);
    }
  }

  async stop(id: string): Promise<void> {
    this.log.push(`stop ${id}`);
  }

  escalate(error: AcpError): void {
    this.escalations.push(error);
    this.log.push(`escalate: ${error.message}`);
  }

  record(event: SupervisorEvent): void {
    this.events.push(event);
    if (event.type === 'state') this.log.push(`${event.id}: ${event.from} -> ${event.to}`);
    else if (event.type === 'restart-scheduled') this.log.push(`restart [${event.ids.join(',')}] in ${event.delayMs}ms`);
  }

  get pendingTimers(): number {
    return this.clock.pending;
  }

  /** Moves the clock forward by `ms`, firing due timers in time order and letting the supervisor settle after each. */
  advance(ms: number): Promise<void> {
    return this.clock.advanceSettling(ms, async () => {
      await this.supervisor?.idle();
    });
  }
}

function setup(flags: unknown = {}, specs: readonly unknown[] = ['a', 'b', 'c'].map((id) => ({ id }))): { env: FakeEnv; sup: Supervisor } {
  const env = new FakeEnv();
  const sup = new Supervisor(env, flags, specs);
  env.supervisor = sup;
  return { env, sup };
}

const STARTED_ABC = [
  'a: stopped -> starting',
  'start a',
  'a: starting -> running',
  'b: stopped -> starting',
  'start b',
  'b: starting -> running',
  'c: stopped -> starting',
  'start c',
  'c: starting -> running',
];

function restartOf(id: string): string[] {
  return [`${id}: restarting -> starting`, `start ${id}`, `${id}: starting -> running`];
}

function states(sup: Supervisor): Record<string, ChildState> {
  return Object.fromEntries(sup.status().map((child) => [child.id, child.state]));
}

function restarts(sup: Supervisor): Record<string, number> {
  return Object.fromEntries(sup.status().map((child) => [child.id, child.restarts]));
}

function boom(): Error {
  return new Error('boom');
}

// ---------------------------------------------------------------------------------------------
// Pure parts: restartDelay, checkIntensity, spec parsing

test('restartDelay grows by factor, caps at maxMs, and jitter 0.2 spreads it to 0.8x..1.2x', (t) => {
  const backoff = { initialMs: 100, factor: 2, maxMs: 1000, jitter: 0 };
  t.deepEqual([1, 2, 3, 4, 5, 6, 50].map((attempt) => restartDelay(backoff, attempt, 0.5)), [100, 200, 400, 800, 1000, 1000, 1000]);
  t.is(restartDelay(backoff, 0, 0.5), 100, 'attempt 0 is treated as the first');
  t.is(restartDelay(backoff, 3, 0), 400, 'no jitter: random does not matter');
  t.is(restartDelay(backoff, 3, 1), 400, 'no jitter: random does not matter');
  const jittery = { ...backoff, jitter: 0.2 };
  for (const [attempt, base] of [[1, 100], [3, 400], [9, 1000]] as const) {
    t.is(restartDelay(jittery, attempt, 0), base * 0.8, `attempt ${attempt}, random 0`);
    t.is(restartDelay(jittery, attempt, 1), base * 1.2, `attempt ${attempt}, random 1`);
    t.is(restartDelay(jittery, attempt, 0.5), base, `attempt ${attempt}, random 0.5`);
  }
  t.is(restartDelay({ initialMs: 0, factor: 2, maxMs: 1000, jitter: 0.2 }, 3, 0), 0);
});

// BUG (supervisors/backoff.ts, restartDelay): with initialMs 0, a large attempt makes
// factor ** (attempt - 1) Infinity and 0 * Infinity is NaN, so the delay is NaN instead of 0.
// Reachable with flags { maxRestarts: 1000, backoff: { initialMs: 0, factor: 10 } } at the 310th
// restart within the window (10 ** 309 === Infinity). Repro: restartDelay({ initialMs: 0, maxMs: 1000,
// factor: 10, jitter: 0 }, 400, 0.5) returns NaN.
test('restartDelay with initialMs 0 stays 0 however many attempts', (t) => {
  t.is(restartDelay({ initialMs: 0, factor: 10, maxMs: 1000, jitter: 0 }, 400, 0.5), 0);
});

test('checkIntensity: more than maxRestarts inside the window escalates, older times slide out', (t) => {
  t.deepEqual(checkIntensity([], 0, 3, 5000), { verdict: 'ok', window: [0] });
  t.deepEqual(checkIntensity([0, 1000], 2000, 3, 5000), { verdict: 'ok', window: [0, 1000, 2000] });
  t.deepEqual(checkIntensity([0, 1000, 2000], 3000, 3, 5000), { verdict: 'escalate', window: [0, 1000, 2000, 3000] });
  t.deepEqual(checkIntensity([0, 1000, 2000], 5001, 3, 5000), { verdict: 'ok', window: [1000, 2000, 5001] });
  t.deepEqual(checkIntensity([], 0, 0, 5000), { verdict: 'escalate', window: [0] }, 'maxRestarts 0 never restarts');
  const previous = [0, 1000];
  checkIntensity(previous, 9000, 3, 5000);
  t.deepEqual(previous, [0, 1000], 'the input is not modified');
});

test('parseFlags and parseChildSpec fill in the defaults', (t) => {
  t.deepEqual(parseFlags(undefined), {
    strategy: 'one-for-one',
    maxRestarts: 3,
    withinMs: 5000,
    backoff: { initialMs: 50, maxMs: 5000, factor: 2, jitter: 0.2 },
  });
  t.deepEqual(parseFlags({ backoff: { initialMs: 10 } }).backoff, { initialMs: 10, maxMs: 5000, factor: 2, jitter: 0.2 });
  t.deepEqual(parseChildSpec({ id: 'a' }), { id: 'a', restart: 'permanent', shutdownMs: 5000 });
  t.deepEqual(setup().sup.flags, parseFlags({}));
});

function specError(t: ExecutionContext, fn: () => unknown, field: string, code: ErrorCode = 'ACP_ERR_SUPERVISOR_SPEC'): void {
  const error = t.throws(fn, { instanceOf: AcpError });
  t.is(error?.code, code);
  t.true(error?.message.includes(field), `names ${field}: ${error?.message}`);
}

test('invalid supervisor flags throw ACP_ERR_SUPERVISOR_SPEC naming the field', (t) => {
  const env = new FakeEnv();
  specError(t, () => new Supervisor(env, { strategy: 'one-for-some' }), "field 'strategy'");
  specError(t, () => new Supervisor(env, { maxRestarts: -1 }), "field 'maxRestarts'");
  specError(t, () => new Supervisor(env, { maxRestarts: 1.5 }), "field 'maxRestarts'");
  specError(t, () => new Supervisor(env, { withinMs: 0 }), "field 'withinMs'");
  specError(t, () => new Supervisor(env, { backoff: { factor: 0.5 } }), "field 'backoff.factor'");
  specError(t, () => new Supervisor(env, { backoff: { jitter: 2 } }), "field 'backoff.jitter'");
  specError(t, () => new Supervisor(env, 'fast'), 'invalid supervisor flags');
  const unknown = t.throws(() => new Supervisor(env, { strategy: 'one-for-one', restarts: 3 }), { instanceOf: AcpError });
  t.is(unknown?.code, 'ACP_ERR_SUPERVISOR_SPEC');
  t.true(unknown?.message.includes('restarts'), unknown?.message);
});

test('invalid child specs throw ACP_ERR_SUPERVISOR_SPEC naming the field', (t) => {
  const env = new FakeEnv();
  specError(t, () => new Supervisor(env, {}, [{ id: '' }]), "field 'id'");
  specError(t, () => new Supervisor(env, {}, [{ id: 'a', restart: 'sometimes' }]), "field 'restart'");
  specError(t, () => new Supervisor(env, {}, [{ id: 'a', shutdownMs: -5 }]), "field 'shutdownMs'");
  specError(t, () => new Supervisor(env, {}, [{}]), "field 'id'");
  const made = setup();
  specError(t, () => made.sup.addChild({ id: 'd', restart: 'never' }), "field 'restart'");
  t.deepEqual(made.env.log, [], 'nothing was started');
  t.deepEqual(made.sup.status().map((child) => child.id), ['a', 'b', 'c']);
});

test('addChild with an existing id rejects with ACP_ERR_ACTOR_EXISTS naming the child', async (t) => {
  const { env, sup } = setup();
  await sup.startAll();
  const error = await t.throwsAsync(sup.addChild({ id: 'b' }), { instanceOf: AcpError });
  t.is(error?.code, 'ACP_ERR_ACTOR_EXISTS');
  t.true(error?.message.includes("'b'"), error?.message);
  await sup.addChild({ id: 'd' });
  t.deepEqual(env.log, [...STARTED_ABC, 'd: stopped -> starting', 'start d', 'd: starting -> running']);
  t.deepEqual(sup.status().map((child) => child.id), ['a', 'b', 'c', 'd']);
});

// BUG (supervisors/supervisor.ts, constructor -> addSpec, lines 69 and 135-140): the constructor
// never checks for duplicate child ids, unlike addChild. new Supervisor(env, {}, [{ id: 'a' }, { id: 'a' }])
// succeeds; order becomes ['a', 'a'] over one map entry, so status() lists 'a' twice and a
// one-for-all crash schedules 'restart [a,a]'.
test('duplicate child ids in the constructor are rejected', (t) => {
  const error = t.throws(() => new Supervisor(new FakeEnv(), {}, [{ id: 'a' }, { id: 'a' }]), { instanceOf: AcpError });
  t.true(error?.code === 'ACP_ERR_SUPERVISOR_SPEC' || error?.code === 'ACP_ERR_ACTOR_EXISTS', error?.code);
});

// ---------------------------------------------------------------------------------------------
// Strategies

test('one-for-one: a crash of b restarts only b', async (t) => {
  const { env, sup } = setup({ strategy: 'one-for-one' });
  await sup.startAll();
  await sup.childCrashed('b', boom());
  await env.advance(49);
  t.is(states(sup).b, 'restarting', 'not yet restarted before the delay');
  await env.advance(1);
  t.deepEqual(env.log, [...STARTED_ABC, 'b: running -> restarting', 'restart [b] in 50ms', ...restartOf('b')]);
  t.deepEqual(states(sup), { a: 'running', b: 'running', c: 'running' });
  t.deepEqual(restarts(sup), { a: 0, b: 1, c: 0 });
  t.is(sup.status()[1]?.lastError, 'boom');
  t.deepEqual(env.events.find((event) => event.type === 'restart-scheduled'), {
    type: 'restart-scheduled',
    ids: ['b'],
    delayMs: 50,
    attempt: 1,
  });
});

test('one-for-all: a crash of b stops c then a, then restarts a, b, c in order', async (t) => {
  const { env, sup } = setup({ strategy: 'one-for-all' });
  await sup.startAll();
  await sup.childCrashed('b', boom());
  await env.advance(50);
  t.deepEqual(env.log, [
    ...STARTED_ABC,
    'b: running -> restarting',
    'c: running -> restarting',
    'stop c',
    'a: running -> restarting',
    'stop a',
    'restart [a,b,c] in 50ms',
    ...restartOf('a'),
    ...restartOf('b'),
    ...restartOf('c'),
  ]);
  t.deepEqual(states(sup), { a: 'running', b: 'running', c: 'running' });
  t.deepEqual(restarts(sup), { a: 1, b: 1, c: 1 });
});

test('rest-for-one: a crash of b stops c only, then restarts b then c', async (t) => {
  const { env, sup } = setup({ strategy: 'rest-for-one' });
  await sup.startAll();
  await sup.childCrashed('b', boom());
  await env.advance(50);
  t.deepEqual(env.log, [
    ...STARTED_ABC,
    'b: running -> restarting',
    'c: running -> restarting',
    'stop c',
    'restart [b,c] in 50ms',
    ...restartOf('b'),
    ...restartOf('c'),
  ]);
  t.deepEqual(restarts(sup), { a: 0, b: 1, c: 1 });
});

test('exits reported for siblings being restarted with the group are not new failures', async (t) => {
  const { env, sup } = setup({ strategy: 'one-for-all' });
  await sup.startAll();
  await sup.childCrashed('b', boom());
  await sup.childExited('c', { crashed: false, reason: 'shutdown' });
  await sup.childCrashed('a', boom());
  await env.advance(50);
  t.deepEqual(env.log.filter((line) => line.startsWith('restart ')), ['restart [a,b,c] in 50ms']);
  t.deepEqual(states(sup), { a: 'running', b: 'running', c: 'running' });
});

// ---------------------------------------------------------------------------------------------
// Intensity

test('intensity: a 4th crash within 5000 ms escalates and stops the siblings in reverse order', async (t) => {
  const { env, sup } = setup();
  await sup.startAll();
  await sup.childCrashed('b', boom());
  await env.advance(1000);
  await sup.childCrashed('b', boom());
  await env.advance(1000);
  await sup.childCrashed('b', boom());
  await env.advance(1000);
  t.is(env.now(), 3000);
  await sup.childCrashed('b', boom());
  await env.advance(10_000);
  t.deepEqual(env.log, [
    ...STARTED_ABC,
    'b: running -> restarting',
    'restart [b] in 50ms',
    ...restartOf('b'),
    'b: running -> restarting',
    'restart [b] in 100ms',
    ...restartOf('b'),
    'b: running -> restarting',
    'restart [b] in 200ms',
    ...restartOf('b'),
    'b: running -> failed',
    'stop c',
    'c: running -> stopped',
    'stop a',
    'a: running -> stopped',
    'escalate: b crashed 4 times within 5000 ms (limit 3); last: crashed: boom',
  ]);
  t.deepEqual(states(sup), { a: 'stopped', b: 'failed', c: 'stopped' });
  t.is(env.escalations.length, 1);
  t.is(env.escalations[0]?.code, 'ACP_ERR_SUPERVISOR_INTENSITY');
  t.deepEqual(env.events.find((event) => event.type === 'escalate'), {
    type: 'escalate',
    id: 'b',
    restartsInWindow: 4,
    reason: 'crashed: boom',
  });
  t.is(env.pendingTimers, 0);
});

test('intensity: the same 4 crashes with the 4th more than 5000 ms after the first do not escalate', async (t) => {
  const { env, sup } = setup();
  await sup.startAll();
  await sup.childCrashed('b', boom());
  await env.advance(1000);
  await sup.childCrashed('b', boom());
  await env.advance(1000);
  await sup.childCrashed('b', boom());
  await env.advance(3001);
  t.is(env.now(), 5001);
  await sup.childCrashed('b', boom());
  await env.advance(10_000);
  t.deepEqual(env.log, [
    ...STARTED_ABC,
    'b: running -> restarting',
    'restart [b] in 50ms',
    ...restartOf('b'),
    'b: running -> restarting',
    'restart [b] in 100ms',
    ...restartOf('b'),
    'b: running -> restarting',
    'restart [b] in 200ms',
    ...restartOf('b'),
    'b: running -> restarting',
    'restart [b] in 200ms',
    ...restartOf('b'),
  ]);
  t.deepEqual(states(sup), { a: 'running', b: 'running', c: 'running' });
  t.deepEqual(restarts(sup), { a: 0, b: 4, c: 0 });
  t.deepEqual(env.escalations, []);
});

test('intensity counts crashes of all children together', async (t) => {
  const { env, sup } = setup();
  await sup.startAll();
  for (const id of ['a', 'b', 'c']) {
    await sup.childCrashed(id, boom());
    await env.advance(500);
  }
  await sup.childCrashed('a', boom());
  t.deepEqual(states(sup), { a: 'failed', b: 'stopped', c: 'stopped' });
  t.is(env.escalations[0]?.message, 'a crashed 4 times within 5000 ms (limit 3); last: crashed: boom');
});

test('after an escalation, startAll starts every child again', async (t) => {
  const { env, sup } = setup({ maxRestarts: 0 });
  await sup.startAll();
  await sup.childCrashed('a', boom());
  t.deepEqual(states(sup), { a: 'failed', b: 'stopped', c: 'stopped' });
  env.log.length = 0;
  await sup.startAll();
  t.deepEqual(env.log, [
    'a: failed -> starting',
    'start a',
    'a: starting -> running',
    ...STARTED_ABC.slice(3),
  ]);
  t.deepEqual(states(sup), { a: 'running', b: 'running', c: 'running' });
});

// ---------------------------------------------------------------------------------------------
// Backoff through the supervisor

test('backoff: successive restart delays are 100, 200, 400, 800, 1000, 1000', async (t) => {
  const { env, sup } = setup(
    { maxRestarts: 10, withinMs: 60_000, backoff: { initialMs: 100, factor: 2, maxMs: 1000, jitter: 0 } },
    [{ id: 'a' }],
  );
  await sup.startAll();
  for (let i = 0; i < 6; i += 1) {
    await sup.childCrashed('a', boom());
    await env.advance(1000);
  }
  t.deepEqual(env.log.filter((line) => line.startsWith('restart ')), [
    'restart [a] in 100ms',
    'restart [a] in 200ms',
    'restart [a] in 400ms',
    'restart [a] in 800ms',
    'restart [a] in 1000ms',
    'restart [a] in 1000ms',
  ]);
  t.deepEqual(
    env.events.flatMap((event) => (event.type === 'restart-scheduled' ? [event.attempt] : [])),
    [1, 2, 3, 4, 5, 6],
  );
  t.deepEqual(restarts(sup), { a: 6 });
  t.deepEqual(states(sup), { a: 'running' });
});

test('backoff: the restart happens exactly after the delay, not before', async (t) => {
  const { env, sup } = setup({ backoff: { initialMs: 100, factor: 2, maxMs: 1000, jitter: 0 } }, [{ id: 'a' }]);
  await sup.startAll();
  await sup.childCrashed('a', boom());
  await env.advance(99);
  t.deepEqual(states(sup), { a: 'restarting' });
  t.is(env.log.filter((line) => line === 'start a').length, 1);
  await env.advance(1);
  t.deepEqual(states(sup), { a: 'running' });
  t.is(env.log.filter((line) => line === 'start a').length, 2);
});

test('backoff: jitter uses env.random', async (t) => {
  const { env, sup } = setup({ backoff: { initialMs: 100, factor: 2, maxMs: 1000, jitter: 0.2 } }, [{ id: 'a' }]);
  await sup.startAll();
  env.randomValue = 0;
  await sup.childCrashed('a', boom());
  await env.advance(1000);
  env.randomValue = 0.75;
  await sup.childCrashed('a', boom());
  await env.advance(1000);
  t.deepEqual(env.log.filter((line) => line.startsWith('restart ')), ['restart [a] in 80ms', 'restart [a] in 220ms']);
});

// ---------------------------------------------------------------------------------------------
// Restart policies

test('permanent: a normal exit is restarted', async (t) => {
  const { env, sup } = setup({}, [{ id: 'p', restart: 'permanent' }]);
  await sup.startAll();
  await sup.childExited('p', { crashed: false, reason: 'normal' });
  await env.advance(50);
  t.deepEqual(env.log, ['p: stopped -> starting', 'start p', 'p: starting -> running', 'p: running -> restarting', 'restart [p] in 50ms', ...restartOf('p')]);
  t.deepEqual(states(sup), { p: 'running' });
  t.is(sup.status()[0]?.lastError, undefined, 'a normal exit is no error');
});

test('transient: a normal exit is not restarted and leaves the child stopped', async (t) => {
  const { env, sup } = setup({}, [{ id: 't', restart: 'transient' }]);
  await sup.startAll();
  await sup.childExited('t', { crashed: false, reason: 'normal' });
  await env.advance(10_000);
  t.deepEqual(env.log, ['t: stopped -> starting', 'start t', 't: starting -> running', 't: running -> stopped']);
  t.deepEqual(states(sup), { t: 'stopped' });
  t.is(env.pendingTimers, 0);
});

test('transient: a crash is restarted', async (t) => {
  const { env, sup } = setup({}, [{ id: 't', restart: 'transient' }]);
  await sup.startAll();
  await sup.childCrashed('t', boom());
  await env.advance(50);
  t.deepEqual(env.log, ['t: stopped -> starting', 'start t', 't: starting -> running', 't: running -> restarting', 'restart [t] in 50ms', ...restartOf('t')]);
  t.deepEqual(states(sup), { t: 'running' });
});

test('temporary: a crash is not restarted and leaves the child failed', async (t) => {
  const { env, sup } = setup({}, [{ id: 'x', restart: 'temporary' }]);
  await sup.startAll();
  await sup.childCrashed('x', boom());
  await env.advance(10_000);
  t.deepEqual(env.log, ['x: stopped -> starting', 'start x', 'x: starting -> running', 'x: running -> failed']);
  t.deepEqual(states(sup), { x: 'failed' });
  t.is(sup.status()[0]?.lastError, 'boom');
});

test('temporary: a normal exit leaves the child stopped', async (t) => {
  const { env, sup } = setup({}, [{ id: 'x', restart: 'temporary' }]);
  await sup.startAll();
  await sup.childExited('x', { crashed: false, reason: 'normal' });
  await env.advance(10_000);
  t.deepEqual(env.log.slice(3), ['x: running -> stopped']);
});

test('one-for-all: a temporary sibling is stopped with the group but not restarted', async (t) => {
  const { env, sup } = setup({ strategy: 'one-for-all' }, [{ id: 'a' }, { id: 'b' }, { id: 'c', restart: 'temporary' }]);
  await sup.startAll();
  env.log.length = 0;
  await sup.childCrashed('a', boom());
  await env.advance(50);
  t.deepEqual(env.log, [
    'a: running -> restarting',
    'c: running -> restarting',
    'stop c',
    'b: running -> restarting',
    'stop b',
    'c: restarting -> stopped',
    'restart [a,b] in 50ms',
    ...restartOf('a'),
    ...restartOf('b'),
  ]);
  t.deepEqual(states(sup), { a: 'running', b: 'running', c: 'stopped' });
});

test('crashes of unknown or already stopped children are ignored', async (t) => {
  const { env, sup } = setup({}, [{ id: 'a', restart: 'transient' }]);
  await sup.startAll();
  await sup.childCrashed('nobody', boom());
  await sup.childExited('a', { crashed: false, reason: 'normal' });
  await sup.childCrashed('a', boom());
  await env.advance(10_000);
  t.deepEqual(env.log, ['a: stopped -> starting', 'start a', 'a: starting -> running', 'a: running -> stopped']);
});

// ---------------------------------------------------------------------------------------------
// Failed starts

test('a failed start is handled like a crash and retried after the backoff', async (t) => {
  const { env, sup } = setup({}, [{ id: 'a' }, { id: 'b' }]);
  env.failStarts.set('b', 2);
  await sup.startAll();
  await env.advance(1000);
  t.deepEqual(env.log, [
    'a: stopped -> starting',
    'start a',
    'a: starting -> running',
    'b: stopped -> starting',
    'start b',
    'b: starting -> restarting',
    'restart [b] in 50ms',
    'b: restarting -> starting',
    'start b',
    'b: starting -> restarting',
    'restart [b] in 100ms',
    ...restartOf('b'),
  ]);
  t.deepEqual(states(sup), { a: 'running', b: 'running' });
  t.deepEqual(restarts(sup), { a: 0, b: 2 });
  t.is(sup.status()[1]?.lastError, 'failed to start: cannot start b');
});

test('failed starts count toward intensity: the 4th failure in the window escalates', async (t) => {
  const { env, sup } = setup({}, [{ id: 'a' }, { id: 'b' }]);
  env.failStarts.set('a', Infinity);
  await sup.startAll();
  await env.advance(10_000);
  t.deepEqual(env.log, [
    'a: stopped -> starting',
    'start a',
    'a: starting -> restarting',
    'restart [a] in 50ms',
    'b: stopped -> starting',
    'start b',
    'b: starting -> running',
    'a: restarting -> starting',
    'start a',
    'a: starting -> restarting',
    'restart [a] in 100ms',
    'a: restarting -> starting',
    'start a',
    'a: starting -> restarting',
    'restart [a] in 200ms',
    'a: restarting -> starting',
    'start a',
    'a: starting -> failed',
    'stop b',
    'b: running -> stopped',
    'escalate: a crashed 4 times within 5000 ms (limit 3); last: crashed: failed to start: cannot start a',
  ]);
  t.deepEqual(states(sup), { a: 'failed', b: 'stopped' });
  t.is(env.pendingTimers, 0);
});

test('one-for-all: a failed restart of b stops the already restarted a and retries the whole group', async (t) => {
  const { env, sup } = setup({ strategy: 'one-for-all' });
  await sup.startAll();
  env.log.length = 0;
  await sup.childCrashed('c', boom());
  env.failStarts.set('b', 1);
  await env.advance(50);
  t.deepEqual(env.log, [
    'c: running -> restarting',
    'b: running -> restarting',
    'stop b',
    'a: running -> restarting',
    'stop a',
    'restart [a,b,c] in 50ms',
    ...restartOf('a'),
    'b: restarting -> starting',
    'start b',
    'b: starting -> restarting',
    'a: running -> restarting',
    'stop a',
    'restart [a,b,c] in 50ms',
  ]);
  await env.advance(50);
  t.deepEqual(env.log.slice(15), [...restartOf('a'), ...restartOf('b'), ...restartOf('c')]);
  t.deepEqual(states(sup), { a: 'running', b: 'running', c: 'running' });
});

// BUG (supervisors/supervisor.ts, startAll lines 73-83 with startChild lines 204-215): when a child
// fails to start during startAll, handleExit schedules a restart of its group, but startAll's loop
// carries on and starts the later children anyway. Under rest-for-one (and one-for-all) b and c then
// run before a is up, and when a finally starts they are skipped by restartGroupNow (they are
// 'running', not 'restarting'), so they are never restarted after a - unlike a crash of a, which
// restarts b and c after a. Repro: strategy 'rest-for-one', children a,b,c, a's first start rejects;
// await startAll(): log shows 'restart [a,b,c] in 50ms' then 'start b', 'start c' before a runs.
test('rest-for-one: when a fails to start, b and c start only after a runs', async (t) => {
  const { env, sup } = setup({ strategy: 'rest-for-one' });
  env.failStarts.set('a', 1);
  await sup.startAll();
  await env.advance(1000);
  const aRunning = env.log.indexOf('a: starting -> running');
  t.true(aRunning >= 0, 'a eventually runs');
  t.true(env.log.lastIndexOf('start b') > aRunning, 'b (re)started after a runs');
  t.true(env.log.lastIndexOf('start c') > aRunning, 'c (re)started after a runs');
});

// ---------------------------------------------------------------------------------------------
// stopAll

test('stopAll stops children in reverse order and cancels a pending restart', async (t) => {
  const { env, sup } = setup();
  await sup.startAll();
  await sup.childCrashed('a', boom());
  t.is(env.pendingTimers, 1);
  await sup.stopAll();
  t.is(env.pendingTimers, 0);
  await env.advance(60_000);
  t.deepEqual(env.log, [
    ...STARTED_ABC,
    'a: running -> restarting',
    'restart [a] in 50ms',
    'stop c',
    'c: running -> stopped',
    'stop b',
    'b: running -> stopped',
    'a: restarting -> stopped',
  ]);
  t.deepEqual(states(sup), { a: 'stopped', b: 'stopped', c: 'stopped' });
});

test('after stopAll, crashes are not restarted; startAll starts the children again', async (t) => {
  const { env, sup } = setup({}, [{ id: 'a' }, { id: 'b' }]);
  await sup.startAll();
  await sup.stopAll();
  await sup.childCrashed('a', boom());
  await env.advance(60_000);
  t.deepEqual(env.log.slice(6), ['stop b', 'b: running -> stopped', 'stop a', 'a: running -> stopped']);
  env.log.length = 0;
  await sup.startAll();
  t.deepEqual(env.log, STARTED_ABC.slice(0, 6));
});

test('removeChild stops and forgets a child; a pending restart of it does nothing', async (t) => {
  const { env, sup } = setup();
  await sup.startAll();
  await sup.childCrashed('b', boom());
  await sup.removeChild('b');
  await sup.removeChild('c');
  await env.advance(60_000);
  t.deepEqual(env.log.slice(9), ['b: running -> restarting', 'restart [b] in 50ms', 'b: restarting -> stopped', 'stop c', 'c: running -> stopped']);
  t.deepEqual(sup.status().map((child) => child.id), ['a']);
});
