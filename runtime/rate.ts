/**
 * A counter's rate per second between two samples of it, rounded to `decimals` places. Null when
 * there is no earlier sample, no time passed, or the counter went down (it was reset: an interface
 * made again, a QEMU restarted), so a reset never shows as a huge or negative rate.
 */
export function counterRate(now: number, before: number | undefined, seconds: number, decimals: number): number | null {
  if (before === undefined || !(seconds > 0) || now < before) return null;
  const scale = 10 ** decimals;
  return Math.round(((now - before) / seconds) * scale) / scale;
}
