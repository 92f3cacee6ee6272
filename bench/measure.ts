/** Shared by the benchmarks: a rate in operations per second, and the line that reports a ratio. */
export async function rate(operations: number, body: (count: number) => Promise<void> | void, warmup = Math.min(1000, operations)): Promise<number> {
  if (warmup > 0) await body(warmup);
  const start = process.hrtime.bigint();
  await body(operations);
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return operations / seconds;
}

export interface Comparison {
  name: string;
  opsPerSecond: number;
  baseline: string;
  baselineOpsPerSecond: number;
  /** Measured in alternating rounds: the rates above are medians, and the ratio's spread is given. */
  rounds?: { count: number; ratioMin: number; ratioMedian: number; ratioMax: number };
}

const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
};

/**
 * The measurement and its baseline, alternating: baseline, measured, baseline, measured, ...
 * (`rounds` of each), so that load from elsewhere on a shared machine falls on both alike. Each
 * side returns its rate for one round; the ratio is taken per round, and reported as the median
 * with its spread (min–max).
 */
export async function alternate(
  name: string,
  baseline: string,
  rounds: number,
  measureBaseline: () => Promise<number> | number,
  measure: () => Promise<number> | number,
): Promise<Comparison> {
  const baselines: number[] = [];
  const measured: number[] = [];
  const ratios: number[] = [];
  for (let round = 0; round < rounds; round += 1) {
    const base = await measureBaseline();
    const value = await measure();
    baselines.push(base);
    measured.push(value);
    ratios.push(value / base);
  }
  return {
    name,
    opsPerSecond: median(measured),
    baseline,
    baselineOpsPerSecond: median(baselines),
    rounds: { count: rounds, ratioMin: Math.min(...ratios), ratioMedian: median(ratios), ratioMax: Math.max(...ratios) },
  };
}

export function report(result: Comparison): void {
  const { rounds } = result;
  const ratio = rounds ? `${rounds.ratioMedian.toFixed(2)}× (${rounds.ratioMin.toFixed(2)}–${rounds.ratioMax.toFixed(2)} over ${rounds.count} alternating rounds)` : `${(result.opsPerSecond / result.baselineOpsPerSecond).toFixed(2)}×`;
  const medians = rounds ? 'medians ' : '';
  process.stdout.write(
    `${result.name}: ${Math.round(result.opsPerSecond)}/s — ${ratio} of ${result.baseline} (${medians}${Math.round(result.opsPerSecond)}/s vs. ${Math.round(result.baselineOpsPerSecond)}/s)\n`,
  );
}

/** Latency percentiles in milliseconds, measured from each request's scheduled time. */
export interface OpenLoopLatency {
  rate: number;
  sent: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
  /** Requests sent more than 1 ms after their scheduled time (the sender itself fell behind). */
  late: number;
}

/**
 * An open-loop load generator: requests go out on a fixed schedule (`rate` per second, on
 * process.hrtime), whether or not earlier ones were answered, and each latency counts from the
 * time the request was *due*, not from when it was sent: a stall of the sender or the event loop
 * shows in the figures instead of silently delaying the next request (coordinated omission).
 */
export async function openLoop(rate: number, durationMs: number, one: () => Promise<unknown>): Promise<OpenLoopLatency> {
  const total = Math.round((rate * durationMs) / 1000);
  const intervalNs = 1e9 / rate;
  const latencies: number[] = [];
  const pending: Promise<void>[] = [];
  let late = 0;
  const start = process.hrtime.bigint();
  let next = 0;
  while (next < total) {
    const now = Number(process.hrtime.bigint() - start);
    // Everything due by now goes out at once (after a stall, several do).
    while (next < total && next * intervalNs <= now) {
      const due = next * intervalNs;
      if (now - due > 1e6) late += 1;
      pending.push(one().then(() => {
        latencies.push((Number(process.hrtime.bigint() - start) - due) / 1e6);
      }));
      next += 1;
    }
    const wait = (next * intervalNs - Number(process.hrtime.bigint() - start)) / 1e6;
    // setTimeout's granularity is about a millisecond: the last stretch is a yield to the loop.
    await new Promise((resolve) => (wait > 1.5 ? setTimeout(resolve, Math.floor(wait - 1)) : setImmediate(resolve)));
  }
  await Promise.all(pending);
  latencies.sort((a, b) => a - b);
  const at = (q: number) => Math.round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]! * 1000) / 1000;
  return { rate, sent: total, p50: at(0.5), p99: at(0.99), p999: at(0.999), max: Math.round(latencies.at(-1)! * 1000) / 1000, late };
}
