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
