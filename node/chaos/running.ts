/**
 * Telling two copies of a system from a move, out of samples that ask the nodes side by side.
 *
 * A sample's answers arrive over up to 500 ms, so "n1 says it runs" and "n2 says it runs" may be
 * about different moments: a migration's source just before the guest left, its target just after
 * it arrived. Each node's answer says when the node answered (`at`) and, for each system, its state
 * and since when (`since`). A report of running covers [since, at]: the system ran there all that
 * time. Reports of one run (same `since`) from later samples make it longer. Two copies at once are
 * two nodes' runs that overlap; that is found whichever samples said so, as soon as one node is
 * asked while both ran.
 *
 * Only what a node said while it watched counts: a run's end in its history (the step after it)
 * is when the hypervisor noticed, which can be much later than when the guest went (a daemon
 * frozen by SIGSTOP, or killed and restarted, records the end when it looks again, though its
 * fence guard killed the guest long before), so it proves no overlap. A double that no sample saw
 * while both ran is left to the simulator's sweep, which sees every step.
 *
 * A report of running without its times (a node that does not say them) covers all time: with any
 * other report of running in the same sample it counts as two copies. The nodes' clocks are
 * compared directly; `skewMs` widens every comparison by how far they may differ (0 in the
 * harness, one host's clock).
 */

/** A node's word on a system: its state, since when, and when the node said so (ms on its clock; absent when it did not say). */
export interface SystemReport {
  node: string;
  state: string;
  since?: number;
  at?: number;
}

/** A run of a system on a node: from `since`, at least until `at`. */
export interface Run {
  node: string;
  since: number;
  at: number;
}

/** Whether two runs overlap in time, clocks allowed to differ by `skewMs`. */
export function ranTogether(a: Run, b: Run, skewMs: number): boolean {
  return Math.max(a.since, b.since) < Math.min(a.at, b.at) + skewMs;
}

const time = (ms: number) => new Date(ms).toISOString().slice(11, 23);

/** A run, for evidence: `n1 running from 12:00:01.250 until at least 12:00:01.300`. */
export function describeRun(run: Run): string {
  return `${run.node} running from ${time(run.since)} until at least ${time(run.at)}`;
}

/** A report of running, for evidence. */
export function describeReport(report: SystemReport): string {
  if (report.since === undefined || report.at === undefined) return `${report.node} running (it did not say since when or at what time)`;
  return `${report.node} running since ${time(report.since)} (said at ${time(report.at)})`;
}

/** The run a report shows: its current state, if that is running, from `since` until the node answered. */
export function runsOf(report: SystemReport): Run[] {
  return report.state === 'running' && report.since !== undefined && report.at !== undefined ? [{ node: report.node, since: report.since, at: report.at }] : [];
}

/** One pair of runs on two nodes that overlapped, the earlier-started first. */
export type Overlap = [Run, Run] | [SystemReport, SystemReport];

/** Every node's runs of every system seen so far; `add` answers the pairs newly found overlapping. */
export class RunIntervals {
  private readonly runs = new Map<string, Run[]>();
  private readonly found = new Set<string>();

  constructor(private readonly skewMs: number) {}

  /** One sample's reports of system `id` (any state): the pairs of runs on two nodes first seen overlapping now (each pair once). */
  add(id: string, reports: readonly SystemReport[]): Overlap[] {
    const overlaps: Overlap[] = [];
    const running = reports.filter((report) => report.state === 'running');
    const untimed = (report: SystemReport) => report.since === undefined || report.at === undefined;
    // Without times a report of running is about any moment: within one sample it overlaps every other.
    for (const [index, a] of running.entries()) for (const b of running.slice(index + 1)) if (untimed(a) || untimed(b)) overlaps.push([a, b]);
    const known = this.runs.get(id) ?? [];
    this.runs.set(id, known);
    for (const seen of reports.flatMap(runsOf)) {
      let run = known.find((other) => other.node === seen.node && other.since === seen.since);
      if (run) run.at = Math.max(run.at, seen.at);
      else known.push((run = { ...seen }));
      for (const other of known) {
        if (other.node === run.node || !ranTogether(run, other, this.skewMs)) continue;
        const key = `${id}\u0000${[`${run.node}@${run.since}`, `${other.node}@${other.since}`].sort().join('\u0000')}`;
        if (this.found.has(key)) continue;
        this.found.add(key);
        overlaps.push(run.since <= other.since ? [{ ...run }, { ...other }] : [{ ...other }, { ...run }]);
      }
    }
    return overlaps;
  }
}

/** An overlap, for evidence. */
export function describeOverlap([a, b]: Overlap): string {
  return 'state' in a ? `${describeReport(a)}; ${describeReport(b as SystemReport)}` : `${describeRun(a)}; ${describeRun(b as Run)}`;
}
