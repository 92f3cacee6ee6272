import type { Message } from '../../runtime/messages.js';
import type { Harness } from '../harness/index.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FAULT_OPS, type Scenario, type Step, type Target } from './scenario.js';

/**
 * Runs a chaos scenario against a harness while a sampler (every 200 ms) checks the invariants:
 * never two nodes report an HA system running; at most one node is primary in any term; after
 * each fault step every HA system runs again (on exactly one node not faulted) within the bound.
 */

export interface Violation {
  /** ISO time of the sample that saw it. */
  at: string;
  invariant: 'two-running' | 'two-primaries' | 'not-recovered';
  message: string;
  /** What the nodes said. */
  evidence: Record<string, unknown>;
}

export interface Recovery {
  step: number;
  text: string;
  node: string | null;
  /** ms from the fault until every HA system ran again on one node; null: not within the bound. */
  recoveryMs: number | null;
  /** Where each HA system ran in the sample that saw it recovered. */
  runningOn: Record<string, string> | null;
}

export interface ChaosReport {
  scenario: string;
  nodes: string[];
  boundMs: number;
  startedAt: string;
  durationMs: number;
  samples: number;
  recoveries: Recovery[];
  violations: Violation[];
  passed: boolean;
}

/** What a run needs of the harness (a unit test gives a fake one). */
export type ChaosTarget = Pick<Harness, 'nodes' | 'node' | 'cli' | 'client' | 'kill' | 'stop' | 'cont' | 'partition' | 'heal' | 'restart' | 'dropRate'>;

export interface RunOptions {
  boundMs: number;
  sampleMs?: number;
  /** Progress lines (each step as it starts). */
  log?: (line: string) => void;
}

const ASK_MS = 500;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface NodeAnswer {
  systems?: { id: string; state: string }[];
  monitor?: { role: string; term: number; primary: string | null };
}

interface PendingFault {
  recovery: Recovery;
  at: number;
  reported: boolean;
}

export class ChaosRun {
  private readonly killed = new Set<string>();
  private readonly stopped = new Set<string>();
  private readonly partitioned = new Set<string>();
  private readonly primaries = new Map<number, Set<string>>();
  private readonly pending: PendingFault[] = [];
  private readonly violations: Violation[] = [];
  private readonly recoveries: Recovery[] = [];
  private readonly haSystems: string[];
  private lastPrimary: string | undefined;
  private samples = 0;

  constructor(private readonly harness: ChaosTarget, private readonly scenario: Scenario, private readonly options: RunOptions) {
    this.haSystems = scenario.systems.filter((system) => system.ha).map((system) => system.id);
  }

  private get names(): string[] {
    return this.harness.nodes.map((node) => node.name);
  }

  /** Creates the systems, runs the steps under the sampler, waits out the last faults' bound. */
  async run(): Promise<ChaosReport> {
    const started = Date.now();
    const log = this.options.log ?? (() => undefined);
    await this.createSystems();
    // A sample every 200 ms whether or not the last one is back: a frozen node makes asks wait 500 ms.
    const inFlight = new Set<Promise<void>>();
    const timer = setInterval(() => {
      const sample = this.sample().catch((error: unknown) => log(`a sample failed: ${(error as Error).message}`));
      inFlight.add(sample);
      void sample.finally(() => inFlight.delete(sample));
    }, this.options.sampleMs ?? 200);
    try {
      for (const [index, step] of this.scenario.steps.entries()) {
        log(`step ${index + 1}: ${step.text}`);
        await this.runStep(step, index);
      }
      // The last faults get their bound to recover in.
      while (this.pending.some((fault) => fault.recovery.recoveryMs === null && !fault.reported)) await sleep(100);
    } finally {
      clearInterval(timer);
      await Promise.all(inFlight);
    }
    return {
      scenario: this.scenario.name,
      nodes: this.names,
      boundMs: this.options.boundMs,
      startedAt: new Date(started).toISOString(),
      durationMs: Date.now() - started,
      samples: this.samples,
      recoveries: this.recoveries,
      violations: this.violations,
      passed: this.violations.length === 0,
    };
  }

  private async createSystems(): Promise<void> {
    const first = this.names[0]!;
    for (const system of this.scenario.systems) {
      const node = system.node === 'primary' ? await this.resolve({ kind: 'primary' }, `system ${system.id} on the primary`) : system.node;
      const args = ['system', 'create', system.id, '--driver', system.driver, ...(system.ha ? ['--ha'] : []), ...(node ? ['--node', node] : [])];
      const created = await this.harness.cli(first, args);
      if (created.code !== 0) throw new Error(`acp ${args.join(' ')} exited ${created.code}: ${created.stderr.trim()}`);
    }
    // Every HA system running on exactly one node before the first step.
    const deadline = Date.now() + 60_000;
    for (;;) {
      const answers = await this.askAll();
      const ready = this.haSystems.every((id) => this.runningOn(answers, id).length === 1);
      if (ready) return;
      if (Date.now() > deadline) throw new Error(`the HA systems did not all start within 60 s: ${JSON.stringify(Object.fromEntries(answers))}`);
      await sleep(200);
    }
  }

  private async runStep(step: Step, index: number): Promise<void> {
    const h = this.harness;
    switch (step.op) {
      case 'wait':
        await sleep(step.ms);
        return;
      case 'heal':
        for (const node of [...this.partitioned]) {
          await h.heal(node);
          this.partitioned.delete(node);
        }
        return;
      case 'restart': {
        const node = this.resolveRestart(step.target, step.text);
        this.stopped.delete(node);
        await h.restart(node);
        this.killed.delete(node);
        return;
      }
      default:
        break;
    }
    const node = await this.resolve(step.target, step.text);
    this.fault(step, index, node);
    switch (step.op) {
      case 'kill': {
        const guard = this.guardPid(node);
        this.killed.add(node);
        await h.kill(node);
        if (guard !== undefined) {
          try {
            process.kill(guard, 'SIGKILL');
          } catch {
            // Already gone with its daemon.
          }
        }
        return;
      }
      case 'stop':
        this.stopped.add(node);
        h.stop(node);
        await sleep(step.ms);
        h.cont(node);
        this.stopped.delete(node);
        return;
      case 'partition':
        this.partitioned.add(node);
        await h.partition(node);
        return;
      case 'drop':
        await h.dropRate(node, step.rate);
        return;
    }
  }

  private fault(step: Step, index: number, node: string): void {
    // `drop N 0%` repairs a link: not a fault.
    if (!FAULT_OPS.has(step.op) || (step.op === 'drop' && step.rate === 0)) return;
    const recovery: Recovery = { step: index + 1, text: step.text, node, recoveryMs: null, runningOn: null };
    const fault = { recovery, at: Date.now(), reported: false };
    this.recoveries.push(recovery);
    this.pending.push(fault);
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

  private guardPid(node: string): number | undefined {
    try {
      const lines = readFileSync(join(this.harness.node(node).home, 'log', 'fence-guard.log'), 'utf8').trim().split('\n');
      const started = lines.map((line) => JSON.parse(line) as { event?: string; pid?: number }).filter((entry) => entry.event === 'started');
      return started.at(-1)?.pid;
    } catch {
      return undefined;
    }
  }

  /** Every live node's hypervisor and monitor status (a node that does not answer within 500 ms says nothing). */
  private async askAll(): Promise<Map<string, NodeAnswer>> {
    const live = this.names.filter((name) => !this.killed.has(name));
    const answers = await Promise.all(
      live.map(async (name): Promise<[string, NodeAnswer]> => {
        const answer: NodeAnswer = {};
        try {
          const client = await this.harness.client(name);
          const [hv, monitor] = await Promise.all([
            client.ask<Message & { systems: { id: string; state: string }[] }>('hypervisor', { type: 'system.status' }, { timeoutMs: ASK_MS }).catch(() => undefined),
            client.ask<Message & { role: string; term: number; primary: string | null }>('monitor', { type: 'monitor.status' }, { timeoutMs: ASK_MS }).catch(() => undefined),
          ]);
          if (hv && Array.isArray(hv.systems)) answer.systems = hv.systems.map((system) => ({ id: system.id, state: system.state }));
          if (monitor) answer.monitor = { role: monitor.role, term: monitor.term, primary: monitor.primary };
        } catch {
          // Not answering: says nothing.
        }
        return [name, answer];
      }),
    );
    return new Map(answers);
  }

  private runningOn(answers: Map<string, NodeAnswer>, id: string): string[] {
    return [...answers].filter(([, answer]) => answer.systems?.some((system) => system.id === id && system.state === 'running')).map(([node]) => node);
  }

  private async sample(): Promise<void> {
    const asked = Date.now();
    const answers = await this.askAll();
    const now = Date.now();
    const at = new Date(now).toISOString();
    this.samples += 1;
    const said = (nodes: string[]) => Object.fromEntries(nodes.map((node) => [node, answers.get(node)]));
    for (const id of this.haSystems) {
      const on = this.runningOn(answers, id);
      if (on.length > 1) this.violations.push({ at, invariant: 'two-running', message: `${id} reported running on ${on.join(' and ')}`, evidence: said(on) });
    }
    for (const [node, answer] of answers) {
      if (answer.monitor?.role !== 'primary') continue;
      const holders = this.primaries.get(answer.monitor.term) ?? new Set<string>();
      const before = holders.size;
      holders.add(node);
      this.primaries.set(answer.monitor.term, holders);
      if (holders.size > 1 && holders.size > before) {
        this.violations.push({ at, invariant: 'two-primaries', message: `term ${answer.monitor.term} had primaries ${[...holders].join(' and ')}`, evidence: said([...holders].filter((n) => answers.has(n))) });
      }
    }
    const faulted = new Set([...this.killed, ...this.stopped, ...this.partitioned]);
    const recovered = this.haSystems.every((id) => {
      const on = this.runningOn(answers, id);
      return on.length === 1 && !faulted.has(on[0]!);
    });
    for (const fault of this.pending) {
      if (fault.recovery.recoveryMs !== null || fault.reported) continue;
      // Only a sample asked after the fault says anything about recovering from it.
      if (recovered && asked >= fault.at) {
        fault.recovery.recoveryMs = now - fault.at;
        fault.recovery.runningOn = Object.fromEntries(this.haSystems.map((id) => [id, this.runningOn(answers, id)[0]!]));
      }
      else if (now - fault.at > this.options.boundMs) {
        fault.reported = true;
        const where = Object.fromEntries(this.haSystems.map((id) => [id, this.runningOn(answers, id)]));
        this.violations.push({
          at,
          invariant: 'not-recovered',
          message: `step ${fault.recovery.step} ('${fault.recovery.text}'): the HA systems did not all run again within ${this.options.boundMs} ms (faulted now: ${[...faulted].join(', ') || 'none'})`,
          evidence: { runningOn: where, said: Object.fromEntries(answers) },
        });
      }
    }
  }
}
