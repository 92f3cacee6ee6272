/**
 * Time and chance as fault logic sees them: the real ones in acpd, a simulated one (sim.ts) in
 * tests. Supervision, the peer links' heartbeats and reconnection back-off, and the failure
 * handling built on them read the clock and set timers only through this.
 */
export interface Clock {
  /** Milliseconds on a monotonic-enough clock (Date.now in acpd). */
  now(): number;
  /** A number in [0, 1). */
  random(): number;
  /** Calls `fn` once after `ms`; returns the function that cancels it. */
  setTimer(ms: number, fn: () => void): () => void;
}

/** Real time. Its timers do not keep the process alive by themselves (acpd's sockets do). */
export const realClock: Clock = {
  now: () => Date.now(),
  random: () => Math.random(),
  setTimer: (ms, fn) => {
    const timer = setTimeout(fn, ms);
    timer.unref();
    return () => clearTimeout(timer);
  },
};
