import { randomBytes } from 'node:crypto';
import { askNodes, InvariantChecker, runningOn, type NodeAnswer, type Recovery, type Violation } from './invariants.js';
import { FAULT_OPS, restartDelay, type Scenario, type Step, type Target } from './scenario.js';
import type { ChaosCluster } from './target.js';
import { chaosValue, checkWrites, converged, listPrefix, viewOf, type ChaosWrite, type NodeView } from './writes.js';

/**
 * Runs a chaos scenario against a cluster (the harness or a live one, node/chaos/target.ts) while
 * a sampler (every 200 ms) checks the invariants: never two nodes report an HA system running,
 * and never two QEMU processes run for one system (each node lists its guests' QEMU processes
 * from /proc); at most one node is primary in any term; after each fault step every HA system runs
 * again (on exactly one node not faulted) within the bound. Meanwhile a writer puts keys through
 * whichever nodes are up; at the end every acknowledged write must be on every live node
 * (node/chaos/writes.ts).
 */

export type { Recovery, Violation } from './invariants.js';
export { restartDelay } from './scenario.js';

export interface WritesReport {
  /** The run's keys: `object/chaos/<run>-<slot>`. */
  prefix: string;
  made: number;
  acked: number;
  indeterminate: number;
  /** The nodes whose final records were checked. */
  checkedOn: string[];
  /** ms after the writes stopped until the checked nodes agreed; null: not within the bound. */
  convergedMs: number | null;
}

export interface ChaosReport {
  scenario: string;
  mode: 'harness' | 'cluster';
  nodes: string[];
  boundMs: number;
  startedAt: string;
  durationMs: number;
  samples: number;
  /** Samples in which two nodes said an HA system runs, each about a different moment: not a double (running.ts). */
  apartSamples: number;
  recoveries: Recovery[];
  writes: WritesReport;
  /** Per system: in how many samples a QEMU process of it was seen, and on which nodes. */
  qemu: Record<string, { samples: number; nodes: string[] }>;
  /** Nodes killed and not restarted by the scenario: down when the run ended. */
  leftDown: string[];
  violations: Violation[];
  passed: boolean;
}

export interface RunOptions {
  boundMs: number;
  sampleMs?: number;
  /** ms between two writes of the CDB writer (default 250). */
  writeMs?: number;
  /** How long the live nodes have to agree at the end (default 30 s). */
  convergeMs?: number;
  /** Progress lines (each step as it starts). */
  log?: (line: string) => void;
}

const WRITE_TIMEOUT_MS = 2000;
/**
 * How far a live cluster's clocks may differ when the checker compares two nodes' reports of running
 * (NTP keeps hosts on one LAN within a few ms; wider counts more pairs as doubles, never fewer).
 * The harness's nodes share this host's clock.
 */
const LIVE_CLOCK_SKEW_MS = 50;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class ChaosRun {
  private readonly killed = new Set<string>();
  private readonly stopped = new Set<string>();
  private readonly partitioned = new Set<string>();
  private readonly dropping = new Set<string>();
  /** Nodes about to be killed: the writer leaves them alone. */
  private readonly faulting = new Set<string>();
  private readonly writes: ChaosWrite[] = [];
  private readonly haSystems: string[];
  private readonly checker: InvariantChecker;
  private readonly runId: string;
  private lastPrimary: string | undefined;
  private writing: { via: string; done: Promise<void> } | undefined;
  private started = 0;

  constructor(private readonly cluster: ChaosCluster, private readonly scenario: Scenario, private readonly options: RunOptions) {
    this.haSystems = scenario.systems.filter((system) => system.ha).map((system) => system.id);
    this.runId = `run-${randomBytes(4).toString('hex')}`;
    this.checker = new InvariantChecker(this.haSystems, options.boundMs, cluster.mode === 'harness' ? 0 : LIVE_CLOCK_SKEW_MS);
  }

  private get names(): readonly string[] {
    return this.cluster.names;
  }

  private get prefix(): string {
    return `object/chaos/${this.runId}-`;
  }

  private log(line: string): void {
    this.options.log?.(line);
  }

  /** Creates the systems, runs the steps under the sampler and the writer, waits out the last faults' bound, checks the writes. */
  async run(): Promise<ChaosReport> {
    this.started = Date.now();
    let writer: Promise<void> | undefined;
    let stopWriting = false;
    const created: string[] = [];
    const inFlight = new Set<Promise<void>>();
    let timer: NodeJS.Timeout | undefined;
    let writesReport: WritesReport = { prefix: this.prefix, made: 0, acked: 0, indeterminate: 0, checkedOn: [], convergedMs: null };
    try {
      await this.createSystems(created);
      // A sample every 200 ms whether or not the last one is back: a frozen node makes asks wait 500 ms.
      timer = setInterval(() => {
        const sample = this.sample().catch((error: unknown) => this.log(`a sample failed: ${(error as Error).message}`));
        inFlight.add(sample);
        void sample.finally(() => inFlight.delete(sample));
      }, this.options.sampleMs ?? 200);
      writer = this.writeLoop(() => stopWriting);
      for (const [index, step] of this.scenario.steps.entries()) {
        this.log(`step ${index + 1}: ${step.text}`);
        await this.runStep(step, index);
      }
      // The last faults get their bound to recover in.
      while (this.checker.waiting) await sleep(100);
      stopWriting = true;
      await writer;
      clearInterval(timer);
      await Promise.all(inFlight);
      await this.undoFaults();
      writesReport = await this.checkWrites();
    } finally {
      stopWriting = true;
      clearInterval(timer);
      await writer?.catch(() => undefined);
      await Promise.all(inFlight);
      if (this.cluster.cleanup) {
        await this.undoFaults().catch((error: unknown) => this.log(`undoing the faults failed: ${(error as Error).message}`));
        await this.cluster.cleanup(created, this.prefix, (line) => this.log(line));
      }
    }
    return {
      scenario: this.scenario.name,
      mode: this.cluster.mode,
      nodes: [...this.names],
      boundMs: this.options.boundMs,
      startedAt: new Date(this.started).toISOString(),
      durationMs: Date.now() - this.started,
      samples: this.checker.samples,
      apartSamples: this.checker.apart,
      recoveries: this.checker.recoveries,
      writes: writesReport,
      qemu: this.checker.qemuReport(),
      leftDown: [...this.killed].sort(),
      violations: this.checker.violations,
      passed: this.checker.violations.length === 0,
    };
  }

  private async createSystems(created: string[]): Promise<void> {
    for (const system of this.scenario.systems) {
      const node = system.node === 'primary' ? await this.resolve({ kind: 'primary' }, `system ${system.id} on the primary`) : system.node;
      const { node: _named, ...rest } = system;
      await this.cluster.createSystem({ ...rest, ...(node ? { node } : {}) });
      created.push(system.id);
    }
    // Every HA system running on exactly one node before the first step.
    const deadline = Date.now() + 60_000;
    for (;;) {
      const answers = await this.askAll();
      const ready = this.haSystems.every((id) => runningOn(answers, id, this.killed).length === 1);
      if (ready) return;
      if (Date.now() > deadline) throw new Error(`the HA systems did not all start within 60 s: ${JSON.stringify(Object.fromEntries(answers))}`);
      await sleep(200);
    }
  }

  private async runStep(step: Step, index: number): Promise<void> {
    const c = this.cluster;
    switch (step.op) {
      case 'wait':
        await sleep(step.ms);
        return;
      case 'heal':
        for (const node of [...this.partitioned]) {
          await c.heal(node);
          this.partitioned.delete(node);
        }
        return;
      case 'restart': {
        const node = this.resolveRestart(step.target, step.text);
        this.stopped.delete(node);
        await c.restart(node);
        this.killed.delete(node);
        return;
      }
      default:
        break;
    }
    const node = await this.resolve(step.target, step.text);
    switch (step.op) {
      case 'kill': {
        const restartAfterMs = restartDelay(this.scenario.steps, index, node, this.lastPrimary);
        this.faulting.add(node);
        if (this.writing?.via === node) await this.writing.done;
        this.fault(step, index, node);
        this.killed.add(node);
        try {
          await c.kill(node, restartAfterMs);
        } finally {
          this.faulting.delete(node);
        }
        return;
      }
      case 'stop':
        this.fault(step, index, node);
        this.stopped.add(node);
        try {
          await c.stop(node, step.ms);
        } finally {
          this.stopped.delete(node);
        }
        return;
      case 'partition':
        this.fault(step, index, node);
        this.partitioned.add(node);
        await c.partition(node);
        return;
      case 'drop':
        this.fault(step, index, node);
        if (step.rate > 0) this.dropping.add(node);
        else this.dropping.delete(node);
        await c.dropRate(node, step.rate);
        return;
    }
  }

  /** What the scenario left on: partitions healed and drop rates back to 0 before the writes are checked. */
  private async undoFaults(): Promise<void> {
    for (const node of [...this.partitioned]) {
      this.log(`healing ${node}, left partitioned by the scenario`);
      await this.cluster.heal(node);
      this.partitioned.delete(node);
    }
    for (const node of [...this.dropping]) {
      if (this.killed.has(node)) continue;
      this.log(`setting ${node}'s drop rate back to 0%, as the scenario left it`);
      await this.cluster.dropRate(node, 0);
      this.dropping.delete(node);
    }
  }

  private fault(step: Step, index: number, node: string): void {
    // `drop N 0%` repairs a link: not a fault.
    if (!FAULT_OPS.has(step.op) || (step.op === 'drop' && step.rate === 0)) return;
    this.checker.fault(index + 1, step.text, node, Date.now());
  }

  private resolveRestart(target: Target, text: string): string {
    if (target.kind === 'node') return target.name;
    if (this.lastPrimary === undefined) throw new Error(`'${text}': no earlier step named the primary`);
    return this.lastPrimary;
  }

  /** A node name, or the current primary (waited for up to the bound). */
  private async resolve(target: Target, text: string): Promise<string> {
    if (target.kind === 'node') return target.name;
    const deadline = Date.now() + this.options.boundMs;
    for (;;) {
      const answers = await this.askAll();
      let best: { node: string; term: number } | undefined;
      for (const [node, answer] of answers) {
        if (answer.monitor?.role === 'primary' && (!best || answer.monitor.term > best.term)) best = { node, term: answer.monitor.term };
      }
      if (best) {
        this.lastPrimary = best.node;
        return best.node;
      }
      if (Date.now() > deadline) throw new Error(`'${text}': no node was primary within ${this.options.boundMs} ms`);
      await sleep(200);
    }
  }

  /** One write every writeMs through the next node that is up, until told to stop. */
  private async writeLoop(stop: () => boolean): Promise<void> {
    let seq = 0;
    let turn = 0;
    while (!stop()) {
      const up = this.names.filter((name) => !this.killed.has(name) && !this.stopped.has(name) && !this.faulting.has(name));
      if (up.length > 0) {
        const via = up[turn % up.length]!;
        turn += 1;
        seq += 1;
        const done = this.writeOne(seq, via);
        this.writing = { via, done };
        await done;
        this.writing = undefined;
      }
      await sleep(this.options.writeMs ?? 250);
    }
  }

  private async writeOne(seq: number, via: string): Promise<void> {
    const { key, value } = chaosValue(this.runId, seq, via);
    const write: ChaosWrite = { key, seq, via, atMs: Date.now() - this.started, outcome: 'indeterminate' };
    this.writes.push(write);
    try {
      const client = await this.cluster.client(via);
      await client.ask('cdb', { type: 'cdb.put', key, value }, { timeoutMs: WRITE_TIMEOUT_MS });
      write.outcome = 'acked';
    } catch (error) {
      write.error = (error as Error).message;
    }
  }

  /** Waits (up to convergeMs) until the live nodes hold the same records, then checks them. */
  private async checkWrites(): Promise<WritesReport> {
    const live = this.names.filter((name) => !this.killed.has(name));
    const boundMs = this.options.convergeMs ?? 30_000;
    const from = Date.now();
    let views = new Map<string, NodeView>();
    let convergedMs: number | null = null;
    for (;;) {
      views = new Map();
      await Promise.all(
        live.map(async (name) => {
          try {
            views.set(name, viewOf(await listPrefix(await this.cluster.client(name), this.prefix, 2000)));
          } catch {
            // Not answering: not checked in this round.
          }
        }),
      );
      if (views.size === live.length && converged(views)) {
        convergedMs = Date.now() - from;
        break;
      }
      if (Date.now() - from > boundMs) break;
      await sleep(500);
    }
    const at = new Date().toISOString();
    if (convergedMs === null) this.log(`the live nodes did not agree within ${boundMs} ms: checking what each holds`);
    for (const violation of checkWrites(this.writes, views)) this.checker.violations.push({ at, ...violation });
    return {
      prefix: this.prefix,
      made: this.writes.length,
      acked: this.writes.filter((write) => write.outcome === 'acked').length,
      indeterminate: this.writes.filter((write) => write.outcome === 'indeterminate').length,
      checkedOn: [...views.keys()].sort(),
      convergedMs,
    };
  }

  private askAll(): Promise<Map<string, NodeAnswer>> {
    return askNodes(this.cluster, this.killed);
  }

  private async sample(): Promise<void> {
    const asked = Date.now();
    const answers = await this.askAll();
    this.checker.observe(answers, this.killed, new Set([...this.killed, ...this.stopped, ...this.partitioned]), asked, Date.now());
  }
}
