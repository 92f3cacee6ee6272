import { readFileSync, writeFileSync } from 'node:fs';
import { AcpError } from '../runtime/errors.js';
import { Harness } from '../node/harness/index.js';
import { LiveCluster } from '../node/chaos/live.js';
import { ChaosRun, type ChaosReport } from '../node/chaos/run.js';
import { checkLiveRestarts, checkNodes, parseScenario, type Scenario } from '../node/chaos/scenario.js';
import { harnessCluster } from '../node/chaos/target.js';
import { parseDuration } from './duration.js';
import { EXIT_NODE_ERROR, EXIT_OK, printJson, table } from './output.js';

export interface ChaosRunArgs {
  file: string;
  report?: string;
  harness?: number;
  cluster: boolean;
  home: string;
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
  const writes = report.writes;
  lines.push(
    `cdb writes: ${writes.made} made, ${writes.acked} acknowledged, ${writes.indeterminate} indeterminate; checked on ${writes.checkedOn.join(', ') || 'no node'}, ${writes.convergedMs === null ? 'which did not agree within the bound' : `agreeing ${writes.convergedMs} ms after the writes stopped`}`,
  );
  for (const [system, seen] of Object.entries(report.qemu)) lines.push(`qemu: ${system}'s QEMU seen in ${seen.samples} of ${report.samples} samples, on ${seen.nodes.join(', ')}`);
  if (report.apartSamples > 0) lines.push(`${report.apartSamples} sample(s) had two nodes each saying an HA system runs, about moments that did not overlap (a move in between): not doubles`);
  if (report.leftDown.length > 0) lines.push(`left down (killed, not restarted by the scenario): ${report.leftDown.join(', ')}${report.mode === 'cluster' ? '; start them again with acp up on each' : ''}`);
  lines.push(`${report.scenario}: ${report.passed ? 'passed' : `${report.violations.length} violation(s)`} (${report.samples} samples over ${report.durationMs} ms, bound ${report.boundMs} ms)`);
  return `${lines.join('\n')}\n`;
}

/**
 * `acp chaos run FILE --harness N` (fresh nodes in network namespaces) or `--cluster` (the live
 * cluster of this home, its nodes run with --faults): exit 0 when no invariant broke, 1 otherwise.
 */
export async function chaosRun(argv: ChaosRunArgs): Promise<number> {
  if ((argv.harness === undefined) === !argv.cluster) {
    throw new AcpError('ACP_ERR_CLI_USAGE', 'say where to run it: --harness N (N fresh nodes in network namespaces, needs root) or --cluster (the cluster of this node, whose nodes run with acp up --faults)');
  }
  if (argv.harness !== undefined && (!Number.isInteger(argv.harness) || argv.harness < 2 || argv.harness > 9)) throw new AcpError('ACP_ERR_CLI_USAGE', `--harness ${argv.harness}: give a whole number of nodes from 2 to 9`);
  const boundMs = parseDuration(argv.bound);
  if (boundMs < 1000 || boundMs > 600_000) throw new AcpError('ACP_ERR_CLI_USAGE', `--bound ${argv.bound}: give a duration from 1s to 10m`);
  let text: string;
  try {
    text = readFileSync(argv.file, 'utf8');
  } catch (error) {
    throw new AcpError('ACP_ERR_CHAOS_SCENARIO', `cannot read ${argv.file}: ${(error as Error).message}`);
  }
  const scenario = parseScenario(text);
  const progress = (line: string) => {
    if (!argv.json) process.stderr.write(`${new Date().toISOString()} ${line}\n`);
  };
  const report = argv.harness !== undefined ? await onHarness(scenario, argv.harness, boundMs, progress) : await onCluster(scenario, argv.home, boundMs, progress);
  if (argv.report !== undefined) writeFileSync(argv.report, `${JSON.stringify(report, null, 2)}\n`);
  if (argv.json) printJson(report);
  else process.stdout.write(formatReport(report));
  return report.passed ? EXIT_OK : EXIT_NODE_ERROR;
}

async function onHarness(scenario: Scenario, count: number, boundMs: number, progress: (line: string) => void): Promise<ChaosReport> {
  const nodes = Array.from({ length: count }, (_, index) => `n${index + 1}`);
  checkNodes(scenario, nodes);
  progress(`starting ${nodes.length} nodes in network namespaces`);
  const harness = await Harness.start({ nodes });
  try {
    await harness.waitSynced(60_000);
    return await new ChaosRun(harnessCluster(harness), scenario, { boundMs, log: progress }).run();
  } finally {
    await harness.teardown();
  }
}

async function onCluster(scenario: Scenario, home: string, boundMs: number, progress: (line: string) => void): Promise<ChaosReport> {
  checkLiveRestarts(scenario);
  const cluster = await LiveCluster.open(home);
  checkNodes(scenario, cluster.names);
  progress(`running on the live cluster: ${cluster.names.join(', ')}`);
  return new ChaosRun(cluster, scenario, { boundMs, log: progress }).run();
}
