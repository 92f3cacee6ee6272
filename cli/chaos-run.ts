import { readFileSync, writeFileSync } from 'node:fs';
import { AcpError } from '../runtime/errors.js';
import { Harness } from '../node/harness/index.js';
import { ChaosRun, type ChaosReport } from '../node/chaos/run.js';
import { checkNodes, parseScenario } from '../node/chaos/scenario.js';
import { parseDuration } from './duration.js';
import { EXIT_NODE_ERROR, EXIT_OK, printJson, table } from './output.js';

export interface ChaosRunArgs {
  file: string;
  report?: string;
  harness?: number;
  bound: string;
  json: boolean;
}

/** The report as text: violations with their evidence, then the recovery table. */
export function formatReport(report: ChaosReport): string {
  const lines: string[] = [];
  for (const violation of report.violations) {
    lines.push(`VIOLATION ${violation.at} ${violation.invariant}: ${violation.message}`);
    lines.push(`  evidence: ${JSON.stringify(violation.evidence)}`);
  }
  const rows = report.recoveries.map((recovery) => [String(recovery.step), recovery.text, recovery.node ?? '-', recovery.recoveryMs === null ? `not within ${report.boundMs} ms` : `${recovery.recoveryMs} ms`, recovery.runningOn === null ? '-' : Object.entries(recovery.runningOn).map(([id, node]) => `${id}@${node}`).join(' ')]);
  lines.push(table([['STEP', 'FAULT', 'NODE', 'RECOVERY', 'RUNNING'], ...rows]).trimEnd());
  lines.push(`${report.scenario}: ${report.passed ? 'passed' : `${report.violations.length} violation(s)`} (${report.samples} samples over ${report.durationMs} ms, bound ${report.boundMs} ms)`);
  return `${lines.join('\n')}\n`;
}

/** `acp chaos run FILE --harness N`: exit 0 when no invariant broke, 1 otherwise. */
export async function chaosRun(argv: ChaosRunArgs): Promise<number> {
  if (argv.harness === undefined) {
    throw new AcpError('ACP_ERR_CLI_USAGE', 'only the harness mode is built: pass --harness N (2-9 nodes in network namespaces, needs root); running against a live cluster is not built yet');
  }
  if (!Number.isInteger(argv.harness) || argv.harness < 2 || argv.harness > 9) throw new AcpError('ACP_ERR_CLI_USAGE', `--harness ${argv.harness}: give a whole number of nodes from 2 to 9`);
  const boundMs = parseDuration(argv.bound);
  if (boundMs < 1000 || boundMs > 600_000) throw new AcpError('ACP_ERR_CLI_USAGE', `--bound ${argv.bound}: give a duration from 1s to 10m`);
  let text: string;
  try {
    text = readFileSync(argv.file, 'utf8');
  } catch (error) {
    throw new AcpError('ACP_ERR_CHAOS_SCENARIO', `cannot read ${argv.file}: ${(error as Error).message}`);
  }
  const scenario = parseScenario(text);
  const nodes = Array.from({ length: argv.harness }, (_, index) => `n${index + 1}`);
  checkNodes(scenario, nodes);
  const progress = (line: string) => {
    if (!argv.json) process.stderr.write(`${new Date().toISOString()} ${line}\n`);
  };
  progress(`starting ${nodes.length} nodes in network namespaces`);
  const harness = await Harness.start({ nodes });
  let report: ChaosReport;
  try {
    await harness.waitSynced(60_000);
    report = await new ChaosRun(harness, scenario, { boundMs, log: progress }).run();
  } finally {
    await harness.teardown();
  }
  if (argv.report !== undefined) writeFileSync(argv.report, `${JSON.stringify(report, null, 2)}\n`);
  if (argv.json) printJson(report);
  else process.stdout.write(formatReport(report));
  return report.passed ? EXIT_OK : EXIT_NODE_ERROR;
}
