import type { Clock } from '../runtime/clock.js';
import { AcpError, errorMessage } from '../runtime/errors.js';
import { restartDelay } from './backoff.js';
import { checkIntensity } from './intensity.js';
import { parseChildSpec, parseFlags, type ChildSpec, type SupervisorFlags } from './spec.js';

export type ChildState = 'starting' | 'running' | 'restarting' | 'stopped' | 'failed';

/** Everything a supervisor needs from the world: a real one in acpd, a simulated one in tests. */
/** What a supervisor acts through: the clock (real or simulated) and its children's start and stop. */
export interface SupervisorEnv extends Clock {
  /** Starts the child; resolves once it runs, rejects if it cannot start. */
  start(id: string): Promise<void>;
  /** Stops the child within `shutdownMs` (then kills it); never rejects. */
  stop(id: string, shutdownMs: number, reason: string): Promise<void>;
  /** The supervisor gave up (restart intensity exceeded): its children are stopped; the parent decides. */
  escalate(error: AcpError): void;
  /** Every transition, in order. */
  record(event: SupervisorEvent): void;
}

export type SupervisorEvent =
  | { type: 'state'; id: string; from: ChildState; to: ChildState; restarts: number; reason?: string }
  | { type: 'restart-scheduled'; ids: readonly string[]; delayMs: number; attempt: number }
  | { type: 'escalate'; id: string; restartsInWindow: number; reason: string };

export interface ChildStatus {
  readonly id: string;
  readonly state: ChildState;
  readonly restarts: number;
  readonly lastError: string | undefined;
}

interface Child {
  readonly spec: ChildSpec;
  state: ChildState;
  restarts: number;
  lastError: string | undefined;
}

type Exit = { readonly crashed: true; readonly error: string } | { readonly crashed: false; readonly reason: string };

/**
 * An OTP-style supervisor: one-for-one, one-for-all or rest-for-one; restart intensity over a
 * sliding window, then escalation; exponential backoff with jitter between restarts; permanent,
 * transient and temporary children; a shutdown timeout per child. Every step runs through one
 * serial queue, and a restart is a scheduled step rather than a loop, so a stop can always get in.
 */
export class Supervisor {
  readonly flags: SupervisorFlags;
  private readonly order: string[] = [];
  private readonly children = new Map<string, Child>();
  private restartTimes: number[] = [];
  /** Per child, its restart times inside the window: the backoff attempt number. */
  private readonly childRestartTimes = new Map<string, number[]>();
  private readonly timers = new Set<() => void>();
  private queue: Promise<void> = Promise.resolve();
  private halted = false;
  /** Inside startAll: children not started yet belong to a failed child's restart group. */
  private booting = false;

  constructor(
    private readonly env: SupervisorEnv,
    flags: unknown = {},
    specs: readonly unknown[] = [],
  ) {
    this.flags = parseFlags(flags);
    for (const input of specs) this.addSpec(parseChildSpec(input));
  }

  /** Starts every child in order. A child that fails to start is handled like a crash. */
  startAll(): Promise<void> {
    this.halted = false;
    return this.step(async () => {
      this.booting = true;
      try {
        for (const id of this.order) {
          if (this.halted) break;
          const child = this.children.get(id)!;
          if (child.state !== 'stopped' && child.state !== 'failed') continue;
          const started = await this.startChild(child);
          // Under one-for-all and rest-for-one the later children start with the failed one's restart.
          if (!started && this.flags.strategy !== 'one-for-one') break;
        }
      } finally {
        this.booting = false;
      }
    });
  }

  /** Adds a child at the end of the order and starts it. */
  addChild(spec: unknown): Promise<void> {
    const parsed = parseChildSpec(spec);
    return this.step(async () => {
      if (this.children.has(parsed.id)) throw new AcpError('ACP_ERR_ACTOR_EXISTS', `child '${parsed.id}' is already supervised`);
      await this.startChild(this.addSpec(parsed));
    });
  }

  /** Stops a child and forgets it. */
  removeChild(id: string, reason = 'removed'): Promise<void> {
    return this.step(async () => {
      const child = this.children.get(id);
      if (!child) return;
      await this.stopChild(child, reason, 'stopped');
      this.children.delete(id);
      this.order.splice(this.order.indexOf(id), 1);
    });
  }

  /** The child stopped on its own: crashed, or exited normally. */
  childExited(id: string, exit: Exit): Promise<void> {
    return this.step(() => this.handleExit(id, exit));
  }

  childCrashed(id: string, error: unknown): Promise<void> {
    return this.childExited(id, { crashed: true, error: errorMessage(error) });
  }

  /** Stops every child in reverse order and cancels pending restarts. */
  stopAll(reason = 'shutdown'): Promise<void> {
    this.halted = true;
    this.cancelTimers();
    return this.step(async () => {
      for (const id of [...this.order].reverse()) await this.stopChild(this.children.get(id)!, reason, 'stopped');
    });
  }

  status(): ChildStatus[] {
    return this.order.map((id) => {
      const child = this.children.get(id)!;
      return { id, state: child.state, restarts: child.restarts, lastError: child.lastError };
    });
  }

  /** Resolves when every queued step has run. */
  idle(): Promise<void> {
    return this.queue;
  }

  private addSpec(spec: ChildSpec): Child {
    if (this.children.has(spec.id)) {
      throw new AcpError('ACP_ERR_SUPERVISOR_SPEC', `invalid child spec: field 'id': '${spec.id}' is used by two children`);
    }
    const child: Child = { spec, state: 'stopped', restarts: 0, lastError: undefined };
    this.order.push(spec.id);
    this.children.set(spec.id, child);
    return child;
  }

  private step(work: () => Promise<void>): Promise<void> {
    const run = this.queue.then(work);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async handleExit(id: string, exit: Exit): Promise<void> {
    const child = this.children.get(id);
    // A child we are stopping or restarting as part of a group is not a new failure.
    if (!child || (child.state !== 'running' && child.state !== 'starting')) return;
    const reason = exit.crashed ? `crashed: ${exit.error}` : `exited: ${exit.reason}`;
    if (exit.crashed) child.lastError = exit.error;
    const restart =
      child.spec.restart === 'permanent' || (child.spec.restart === 'transient' && exit.crashed);
    if (!restart || this.halted) {
      this.transition(child, exit.crashed ? 'failed' : 'stopped', reason);
      return;
    }
    const intensity = checkIntensity(this.restartTimes, this.env.now(), this.flags.maxRestarts, this.flags.withinMs);
    this.restartTimes = [...intensity.window];
    if (intensity.verdict === 'escalate') {
      await this.escalate(child, intensity.window.length, reason);
      return;
    }
    const group = this.restartGroup(id);
    this.transition(child, 'restarting', reason);
    // Siblings that the strategy takes down with the crashed child stop in reverse start order.
    for (const sibling of [...group].reverse()) {
      if (sibling === id) continue;
      const other = this.children.get(sibling)!;
      if (this.booting && other.state === 'stopped') {
        this.transition(other, 'restarting', `waits for ${id} to start`);
      } else if (other.state === 'running' || other.state === 'starting') {
        this.transition(other, 'restarting', `sibling ${id} ${reason}`);
        await this.env.stop(sibling, other.spec.shutdownMs, `restart with ${id}`);
      }
    }
    const now = this.env.now();
    const times = [...(this.childRestartTimes.get(id) ?? []).filter((time) => now - time < this.flags.withinMs), now];
    this.childRestartTimes.set(id, times);
    const attempt = times.length;
    const delayMs = restartDelay(this.flags.backoff, attempt, this.env.random());
    const ids = group.filter((member) => {
      const spec = this.children.get(member)!.spec;
      return member === id || spec.restart !== 'temporary';
    });
    for (const member of group) {
      if (!ids.includes(member)) this.transition(this.children.get(member)!, 'stopped', 'temporary child not restarted');
    }
    this.env.record({ type: 'restart-scheduled', ids, delayMs, attempt });
    this.schedule(delayMs, () => this.step(() => this.restartGroupNow(ids)));
  }

  private async restartGroupNow(ids: readonly string[]): Promise<void> {
    if (this.halted) return;
    for (const id of ids) {
      const child = this.children.get(id);
      if (!child || child.state !== 'restarting') continue;
      child.restarts += 1;
      const started = await this.startChild(child);
      if (!started) return; // the failed start was handled as a crash and schedules its own retry
    }
  }

  private async startChild(child: Child): Promise<boolean> {
    this.transition(child, 'starting');
    try {
      await this.env.start(child.spec.id);
    } catch (error) {
      // A failed (re)start counts as a crash; handled as its own step, not a loop.
      await this.handleExit(child.spec.id, { crashed: true, error: `failed to start: ${errorMessage(error)}` });
      return false;
    }
    if (child.state === 'starting') this.transition(child, 'running');
    return true;
  }

  private async stopChild(child: Child, reason: string, to: ChildState): Promise<void> {
    if (child.state === 'running' || child.state === 'starting') {
      await this.env.stop(child.spec.id, child.spec.shutdownMs, reason);
    }
    if (child.state !== to) this.transition(child, to, reason);
  }

  private async escalate(child: Child, restartsInWindow: number, reason: string): Promise<void> {
    this.halted = true;
    this.cancelTimers();
    this.env.record({ type: 'escalate', id: child.spec.id, restartsInWindow, reason });
    this.transition(child, 'failed', reason);
    for (const id of [...this.order].reverse()) {
      const other = this.children.get(id)!;
      if (other === child) continue;
      await this.stopChild(other, `supervisor escalated after ${child.spec.id} failed`, 'stopped');
    }
    this.restartTimes = [];
    this.childRestartTimes.clear();
    this.env.escalate(
      new AcpError(
        'ACP_ERR_SUPERVISOR_INTENSITY',
        `${child.spec.id} crashed ${restartsInWindow} times within ${this.flags.withinMs} ms (limit ${this.flags.maxRestarts}); last: ${reason}`,
      ),
    );
  }

  private restartGroup(id: string): string[] {
    switch (this.flags.strategy) {
      case 'one-for-one':
        return [id];
      case 'one-for-all':
        return [...this.order];
      case 'rest-for-one':
        return this.order.slice(this.order.indexOf(id));
      default: {
        const unreachable: never = this.flags.strategy;
        return unreachable;
      }
    }
  }

  private transition(child: Child, to: ChildState, reason?: string): void {
    const from = child.state;
    child.state = to;
    const event: SupervisorEvent = { type: 'state', id: child.spec.id, from, to, restarts: child.restarts };
    this.env.record(reason === undefined ? event : { ...event, reason });
  }

  private schedule(ms: number, fn: () => void): void {
    const cancel = this.env.setTimer(ms, () => {
      this.timers.delete(cancel);
      fn();
    });
    this.timers.add(cancel);
  }

  private cancelTimers(): void {
    for (const cancel of this.timers) cancel();
    this.timers.clear();
  }
}
