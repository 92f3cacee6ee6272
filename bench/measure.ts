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
}

export function report(result: Comparison): void {
  const ratio = result.opsPerSecond / result.baselineOpsPerSecond;
  process.stdout.write(
    `${result.name}: ${Math.round(result.opsPerSecond)}/s — ${ratio.toFixed(2)}× of ${result.baseline} (${Math.round(result.baselineOpsPerSecond)}/s)\n`,
  );
}
