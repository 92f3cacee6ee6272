import type { QemuProcess } from '../../adapters/qemu-processes.js';
import type { Message } from '../../runtime/messages.js';
import { describeOverlap, RunIntervals, type SystemReport } from './running.js';
import type { ChaosCluster } from './target.js';

/**
 * The invariants a chaos run checks on each sample of what the nodes say: never two nodes report
 * an HA system running at one moment (running.ts); never two QEMU processes for one system (counted over every node); at most
 * one primary in any term; after each fault every HA system runs again, on one node not faulted,
 * within the bound.
 */

export interface Violation {
  /** ISO time of the sample that saw it. */
  at: string;
  invariant: 'two-running' | 'two-qemu' | 'two-primaries' | 'not-recovered' | 'write-lost';
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

export interface NodeAnswer {
  /** `since`: when the system entered its state there; ms on the node's clock, when it said. */
  systems?: { id: string; state: string; since?: number }[];
  /** When the node answered (ms on its clock), when it said. */
  at?: number;
  monitor?: { role: string; term: number; primary: string | null };
  /** Its guests' QEMU processes; `seenFromHost`: the node did not answer, this host's /proc did. */
  qemu?: QemuProcess[];
  seenFromHost?: true;
}

interface PendingFault {
  recovery: Recovery;
  at: number;
  reported: boolean;
}

const ASK_MS = 500;

/**
 * What every node says (hypervisor, monitor, QEMU processes; 500 ms each): a node killed, or not
 * answering, says nothing, but its QEMU processes may be seen from this host (the harness).
 */
export async function askNodes(cluster: ChaosCluster, killed: ReadonlySet<string>): Promise<Map<string, NodeAnswer>> {
  const answers = await Promise.all(
    cluster.names.map(async (name): Promise<[string, NodeAnswer]> => {
      const answer: NodeAnswer = {};
      if (!killed.has(name)) {
        try {
          const client = await cluster.client(name);
          const [hv, monitor, qemu] = await Promise.all([
            client.ask<Message & StatusReply>('hypervisor', { type: 'system.status' }, { timeoutMs: ASK_MS }).catch(() => undefined),
            client.ask<Message & { role: string; term: number; primary: string | null }>('monitor', { type: 'monitor.status' }, { timeoutMs: ASK_MS }).catch(() => undefined),
            client.ask<Message & { processes: QemuProcess[] }>('framework', { type: 'framework.qemu' }, { timeoutMs: ASK_MS }).catch(() => undefined),
          ]);
          if (hv && Array.isArray(hv.systems)) Object.assign(answer, fromStatus(hv));
          if (monitor) answer.monitor = { role: monitor.role, term: monitor.term, primary: monitor.primary };
          if (qemu && Array.isArray(qemu.processes)) answer.qemu = qemu.processes;
        } catch {
          // Not answering: says nothing.
        }
      }
      if (answer.qemu === undefined && cluster.localQemu) {
        answer.qemu = await cluster.localQemu(name).catch(() => undefined);
        if (answer.qemu) answer.seenFromHost = true;
      }
      return [name, answer];
    }),
  );
  return new Map(answers.filter(([name, answer]) => !killed.has(name) || answer.qemu !== undefined));
}

/** `{ [key]: ms }` for an ISO time, `{}` for anything else. */
function timeOf<Key extends string>(key: Key, value: unknown): Partial<Record<Key, number>> {
  const ms = typeof value === 'string' ? Date.parse(value) : Number.NaN;
  return Number.isFinite(ms) ? ({ [key]: ms } as Partial<Record<Key, number>>) : {};
}

/** A hypervisor's system.status answer, as far as the checker reads it (anything else in it is left). */
export interface StatusReply {
  at?: unknown;
  systems: { id: string; state: string; since?: unknown }[];
}

/** What a node's system.status answer says, as the checker reads it: each system's state and since when, and when the node answered. */
export function fromStatus(reply: StatusReply): Pick<NodeAnswer, 'systems' | 'at'> {
  return { systems: reply.systems.map((system) => ({ id: system.id, state: system.state, ...timeOf('since', system.since) })), ...timeOf('at', reply.at) };
}

/** What each node (not killed) says of the system, in whatever state. */
export function systemReports(answers: ReadonlyMap<string, NodeAnswer>, id: string, killed: ReadonlySet<string>): SystemReport[] {
  return [...answers].flatMap(([node, answer]) => {
    const system = killed.has(node) ? undefined : answer.systems?.find((listed) => listed.id === id);
    if (!system) return [];
    return [{ node, state: system.state, ...(system.since === undefined ? {} : { since: system.since }), ...(answer.at === undefined ? {} : { at: answer.at }) }];
  });
}

/** The nodes (not killed) that report the system running. */
export function runningOn(answers: ReadonlyMap<string, NodeAnswer>, id: string, killed: ReadonlySet<string>): string[] {
  return systemReports(answers, id, killed).filter((report) => report.state === 'running').map((report) => report.node);
}

export class InvariantChecker {
  readonly violations: Violation[] = [];
  readonly recoveries: Recovery[] = [];
  samples = 0;
  /** Samples in which two nodes said an HA system runs, about moments that did not overlap (not a double; running.ts). */
  apart = 0;
  private readonly primaries = new Map<number, Set<string>>();
  private readonly pending: PendingFault[] = [];
  private readonly qemuSeen = new Map<string, { samples: number; nodes: Set<string> }>();

  private readonly running: RunIntervals;

  /** `clockSkewMs`: how far the nodes' clocks may differ (running.ts). */
  constructor(
    private readonly haSystems: readonly string[],
    private readonly boundMs: number,
    clockSkewMs = 0,
  ) {
    this.running = new RunIntervals(clockSkewMs);
  }

  /** A fault was injected at `at` (ms): every HA system must run again within the bound. */
  fault(step: number, text: string, node: string, at: number): void {
    const recovery: Recovery = { step, text, node, recoveryMs: null, runningOn: null };
    this.recoveries.push(recovery);
    this.pending.push({ recovery, at, reported: false });
  }

  /** Some fault has neither recovered nor passed its bound yet. */
  get waiting(): boolean {
    return this.pending.some((fault) => fault.recovery.recoveryMs === null && !fault.reported);
  }

  /** Per system: in how many samples a QEMU process of it was seen, and on which nodes. */
  qemuReport(): Record<string, { samples: number; nodes: string[] }> {
    return Object.fromEntries([...this.qemuSeen].sort(([a], [b]) => a.localeCompare(b)).map(([system, seen]) => [system, { samples: seen.samples, nodes: [...seen.nodes].sort() }]));
  }

  /** One sample: asked at `asked`, back at `now` (ms); `faulted`: the nodes under a fault now. */
  observe(answers: ReadonlyMap<string, NodeAnswer>, killed: ReadonlySet<string>, faulted: ReadonlySet<string>, asked: number, now: number): void {
    const at = new Date(now).toISOString();
    this.samples += 1;
    const said = (nodes: string[]) => Object.fromEntries(nodes.map((node) => [node, answers.get(node)]));
    for (const id of this.haSystems) {
      const reports = systemReports(answers, id, killed);
      const overlaps = this.running.add(id, reports);
      for (const overlap of overlaps) {
        const [a, b] = overlap;
        this.violations.push({ at, invariant: 'two-running', message: `${id} ran on ${a.node} and ${b.node} at once: ${describeOverlap(overlap)}`, evidence: said([a.node, b.node].filter((node) => answers.has(node))) });
      }
      if (overlaps.length === 0 && reports.filter((report) => report.state === 'running').length > 1) this.apart += 1;
    }
    // Every system's QEMU processes, counted over every node: more than one is two copies.
    const copies = new Map<string, { node: string; pid: number }[]>();
    for (const [node, answer] of answers) {
      for (const process of answer.qemu ?? []) copies.set(process.system, [...(copies.get(process.system) ?? []), { node, pid: process.pid }]);
    }
    for (const [system, found] of copies) {
      const seen = this.qemuSeen.get(system) ?? { samples: 0, nodes: new Set<string>() };
      seen.samples += 1;
      for (const copy of found) seen.nodes.add(copy.node);
      this.qemuSeen.set(system, seen);
      if (found.length > 1) {
        const nodes = [...new Set(found.map((copy) => copy.node))];
        this.violations.push({ at, invariant: 'two-qemu', message: `${found.length} QEMU processes ran for ${system}: ${found.map((copy) => `pid ${copy.pid} on ${copy.node}`).join(', ')}`, evidence: said(nodes) });
      }
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
    const recovered = this.haSystems.every((id) => {
      const on = runningOn(answers, id, killed);
      return on.length === 1 && !faulted.has(on[0]!);
    });
    for (const fault of this.pending) {
      if (fault.recovery.recoveryMs !== null || fault.reported) continue;
      // Only a sample asked after the fault says anything about recovering from it.
      if (recovered && asked >= fault.at) {
        fault.recovery.recoveryMs = now - fault.at;
        fault.recovery.runningOn = Object.fromEntries(this.haSystems.map((id) => [id, runningOn(answers, id, killed)[0]!]));
      } else if (now - fault.at > this.boundMs) {
        fault.reported = true;
        const where = Object.fromEntries(this.haSystems.map((id) => [id, runningOn(answers, id, killed)]));
        this.violations.push({
          at,
          invariant: 'not-recovered',
          message: `step ${fault.recovery.step} ('${fault.recovery.text}'): the HA systems did not all run again within ${this.boundMs} ms (faulted now: ${[...faulted].join(', ') || 'none'})`,
          evidence: { runningOn: where, said: Object.fromEntries(answers) },
        });
      }
    }
  }
}
