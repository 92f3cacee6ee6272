/**
 * The deterministic simulator's pieces, shared by every simulation of fault logic (supervision,
 * peer links, CDB sync, election, failover): a seeded random source and a simulated clock whose
 * timers fire in time order (ties in the order they were set) only when the test advances it.
 */
import type { Clock } from './clock.js';

/** A small seeded generator (an LCG): every run of a seed is the same, so a failing seed replays. */
export function seeded(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
}

interface SimTimer {
  readonly at: number;
  readonly seq: number;
  readonly fn: () => void;
}

/** A clock that moves only when told to. */
export class SimClock implements Clock {
  private current: number;
  private timers: SimTimer[] = [];
  private seq = 0;
  readonly random: () => number;

  constructor(options: { start?: number; seed?: number } = {}) {
    this.current = options.start ?? 0;
    this.random = seeded(options.seed ?? 1);
  }

  now(): number {
    return this.current;
  }

  setTimer(ms: number, fn: () => void): () => void {
    const timer: SimTimer = { at: this.current + Math.max(0, ms), seq: this.seq++, fn };
    this.timers.push(timer);
    return () => {
      this.timers = this.timers.filter((other) => other !== timer);
    };
  }

  /** Timers still to fire. */
  get pending(): number {
    return this.timers.length;
  }

  /** Moves time forward by `ms`, firing every timer due on the way, in order (and those they set). */
  advance(ms: number): void {
    const end = this.current + ms;
    while (this.fireNext(end));
    this.current = end;
  }

  /** As `advance`, awaiting `settle` (say, a supervisor's idle) before the first timer and after each. */
  async advanceSettling(ms: number, settle: () => Promise<void>): Promise<void> {
    const end = this.current + ms;
    await settle();
    while (this.fireNext(end)) await settle();
    this.current = end;
  }

  /** Fires the next timer due by `end`, if any; false when none is. */
  private fireNext(end: number): boolean {
    const next = this.nextDue(end);
    if (!next) return false;
    this.timers = this.timers.filter((timer) => timer !== next);
    this.current = next.at;
    next.fn();
    return true;
  }

  private nextDue(end: number): SimTimer | undefined {
    let best: SimTimer | undefined;
    for (const timer of this.timers) {
      if (timer.at > end) continue;
      if (!best || timer.at < best.at || (timer.at === best.at && timer.seq < best.seq)) best = timer;
    }
    return best;
  }
}
