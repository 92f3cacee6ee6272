/**
 * Telling two copies of a system from a move, out of samples that ask the nodes side by side.
 *
 * A sample's answers arrive over up to 500 ms, so "n1 says it runs" and "n2 says it runs" may be
 * about different moments: a migration's source just before the guest left, its target just after
 * it arrived. Each node's answer says since when the system has been in its state there and at what
 * time the node answered, so a report of running covers [since, at]: it ran there all that time.
 * Reports from one node with one `since` are the same run, so the run's interval grows with each
 * later sample. Two copies at once are two nodes' runs whose intervals overlap; that is found
 * whichever samples the two reports came in, as soon as one node is asked while both ran.
 *
 * A report without its times (a node that does not say them) covers all time: with any other
 * report in the same sample it counts as two copies. The nodes' clocks are compared directly;
 * `skewMs` widens every comparison by how far they may differ (0 in the harness, one host's clock).
 */

/** A node's word that a system runs there: since when, and when it said so (ms on its clock; absent when it did not say). */
export interface RunningReport {
  node: string;
  since?: number;
  at?: number;
}

interface Run {
  node: string;
  since: number;
  at: number;
}

/** Whether two runs on two nodes overlap in time, clocks allowed to differ by `skewMs`. A report without times overlaps everything. */
export function ranTogether(a: RunningReport, b: RunningReport, skewMs: number): boolean {
  if (a.since === undefined || a.at === undefined || b.since === undefined || b.at === undefined) return true;
  return Math.max(a.since, b.since) < Math.min(a.at, b.at) + skewMs;
}

/** A report's times, for evidence: `n1 running since 12:00:01.250 (said at 12:00:01.300)`. */
export function describeReport(report: RunningReport): string {
  const time = (ms: number) => new Date(ms).toISOString().slice(11, 23);
  if (report.since === undefined || report.at === undefined) return `${report.node} running (it did not say since when or at what time)`;
  return `${report.node} running since ${time(report.since)} (said at ${time(report.at)})`;
}

/** Every node's runs of every system seen so far; `add` answers the pairs on two nodes newly found overlapping. */
export class RunIntervals {
  private readonly runs = new Map<string, Run[]>();
  private readonly found = new Set<string>();

  constructor(private readonly skewMs: number) {}

  /** One sample's reports of system `id` running: the pairs of runs on two nodes first seen overlapping now (each pair once). */
  add(id: string, reports: readonly RunningReport[]): [RunningReport, RunningReport][] {
    const overlaps: [RunningReport, RunningReport][] = [];
    const untimed = (report: RunningReport) => report.since === undefined || report.at === undefined;
    // Without times a report is about any moment: within one sample it overlaps every other.
    for (const [index, a] of reports.entries()) for (const b of reports.slice(index + 1)) if (untimed(a) || untimed(b)) overlaps.push([a, b]);
    const runs = this.runs.get(id) ?? [];
    this.runs.set(id, runs);
    for (const report of reports) {
      if (report.since === undefined || report.at === undefined) continue;
      let run = runs.find((known) => known.node === report.node && known.since === report.since);
      if (run) run.at = Math.max(run.at, report.at);
      else runs.push((run = { node: report.node, since: report.since, at: report.at }));
      for (const other of runs) {
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
