/**
 * Restart intensity as a pure function over a sliding window: given the restart times so far and
 * a new one, answers whether the supervisor may restart (`ok`) or must give up and escalate.
 * More than `maxRestarts` restarts within `withinMs` escalates: with the default 3 in 5000 ms, the
 * 4th crash inside 5 s escalates, and a 4th outside it does not.
 */
export interface IntensityVerdict {
  readonly verdict: 'ok' | 'escalate';
  /** The restart times still inside the window, the new one included. */
  readonly window: readonly number[];
}

export function checkIntensity(previous: readonly number[], now: number, maxRestarts: number, withinMs: number): IntensityVerdict {
  const window = [...previous.filter((time) => now - time < withinMs), now];
  return { verdict: window.length > maxRestarts ? 'escalate' : 'ok', window };
}
