import type { Backoff } from './spec.js';

/**
 * Delay before restart attempt `attempt` (1 for the first restart): exponential growth from
 * `initialMs` by `factor`, capped at `maxMs`, then spread by ±`jitter` using `random` (0..1).
 */
export function restartDelay(backoff: Backoff, attempt: number, random: number): number {
  const growth = backoff.factor ** Math.max(0, attempt - 1);
  // 0 × Infinity would be NaN: an initial delay of 0 stays 0, however many attempts.
  const base = backoff.initialMs === 0 ? 0 : Math.min(backoff.maxMs, backoff.initialMs * growth);
  const spread = base * backoff.jitter * (2 * random - 1);
  return Math.max(0, Math.round(base + spread));
}
