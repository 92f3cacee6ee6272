/**
 * What the HA tests in namespaces ask of a harness cluster: where a system runs (by every node's
 * hypervisor), a sampler that records any moment two nodes run it (judged as the chaos checker
 * judges it: each node's runs, from its answers' states and times, must not overlap),
 * and a node holding its lease.
 */
import type { HaView } from '../../actors/ha/view.js';
import type { Harness } from '../../node/harness/index.js';
import { fromStatus, systemReports as reportsOf, type NodeAnswer, type StatusReply } from '../../node/chaos/invariants.js';
import { describeOverlap, describeReport, RunIntervals, type SystemReport } from '../../node/chaos/running.js';
import type { Message } from '../../runtime/messages.js';
import { eventually } from './node.js';

/** What each node's hypervisor says of the system, in whatever state (a node that does not answer within 500 ms says nothing). */
export async function systemReports(cluster: Harness, system: string, nodes: readonly string[] = cluster.nodes.map((node) => node.name)): Promise<SystemReport[]> {
  const answers = new Map<string, NodeAnswer>();
  await Promise.all(
    nodes.map(async (node) => {
      try {
        const client = await cluster.client(node);
        answers.set(node, fromStatus(await client.ask<Message & StatusReply>('hypervisor', { type: 'system.status' }, { timeoutMs: 500 })));
      } catch {
        // Not answering: says nothing.
      }
    }),
  );
  return reportsOf(answers, system, new Set()).sort((a, b) => a.node.localeCompare(b.node));
}

/** The nodes whose hypervisor says the system is running. */
export async function runningOn(cluster: Harness, system: string, nodes?: readonly string[]): Promise<string[]> {
  return (await systemReports(cluster, system, nodes)).filter((report) => report.state === 'running').map((report) => report.node);
}

/** One sample: two copies at one moment (`double`), or two reports of running each about another moment (`apart`: not a double). */
export interface Sampled {
  double?: string;
  apart?: string;
}

/**
 * Samples of where the system runs, judged as the chaos checker judges them (node/chaos/running.ts:
 * each node's runs merged over the samples, two copies when two nodes' runs overlap; the harness's
 * nodes share one clock).
 */
export function runningSampler(cluster: Harness, system: string, nodes?: readonly string[]): () => Promise<Sampled> {
  const runs = new RunIntervals(0);
  return async () => {
    const reports = await systemReports(cluster, system, nodes);
    const overlaps = runs.add(system, reports);
    if (overlaps.length > 0) return { double: overlaps.map((overlap) => `running on ${overlap[0].node} and ${overlap[1].node} at once: ${describeOverlap(overlap)}`).join(' | ') };
    const running = reports.filter((report) => report.state === 'running');
    return running.length > 1 ? { apart: running.map(describeReport).join('; ') } : {};
  };
}

/** Samples every 100 ms until stopped: every double (two copies at one moment) and every apart sample, each with its time. */
export function doubleRunSampler(sample: () => Promise<Sampled>): { stop: () => Promise<{ samples: number; doubles: string[]; apart: string[] }> } {
  let samples = 0;
  const doubles: string[] = [];
  const apart: string[] = [];
  const inFlight = new Set<Promise<void>>();
  const timer = setInterval(() => {
    const at = new Date().toISOString();
    const taken = sample().then((found) => {
      samples += 1;
      if (found.double) doubles.push(`${at}: ${found.double}`);
      if (found.apart) apart.push(`${at}: ${found.apart}`);
    });
    inFlight.add(taken);
    void taken.finally(() => inFlight.delete(taken));
  }, 100);
  return {
    stop: async () => {
      clearInterval(timer);
      await Promise.all(inFlight);
      return { samples, doubles, apart };
    },
  };
}

/** The one node running the system, once exactly one does (and it is not `not`). */
export function runsOnOne(cluster: Harness, system: string, timeoutMs: number, not?: string): Promise<string> {
  return eventually(async () => {
    const nodes = await runningOn(cluster, system);
    return nodes.length === 1 && nodes[0] !== not ? nodes[0] : undefined;
  }, timeoutMs, `${system} to run on exactly one node${not === undefined ? '' : ` other than ${not}`}`);
}

/** Waits until the node's local HA manager holds its lease (it rejoined after a restart or a heal). */
export async function holdsLease(cluster: Harness, node: string): Promise<void> {
  await eventually(async () => {
    const view = await (await cluster.client(node)).ask<HaView>('ha', { type: 'ha.show' }, { timeoutMs: 2000 }).catch(() => undefined);
    return view?.local?.holding === true ? true : undefined;
  }, 60_000, `${node} to hold its HA lease again`);
}
