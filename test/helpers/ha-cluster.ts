/**
 * What the HA tests in namespaces ask of a harness cluster: where a system runs (by every node's
 * hypervisor), a sampler that records any moment two nodes run it, and a node holding its lease.
 */
import type { HaView } from '../../actors/ha/view.js';
import type { Harness } from '../../node/harness/index.js';
import type { Message } from '../../runtime/messages.js';
import { eventually } from './node.js';

/** The nodes whose hypervisor says the system is running (a node that does not answer within 500 ms says nothing). */
export async function runningOn(cluster: Harness, system: string, nodes: readonly string[] = cluster.nodes.map((node) => node.name)): Promise<string[]> {
  const answers = await Promise.all(
    nodes.map(async (node) => {
      try {
        const client = await cluster.client(node);
        const reply = await client.ask<Message & { systems: { id: string; state: string }[] }>('hypervisor', { type: 'system.status' }, { timeoutMs: 500 });
        return reply.systems.some((listed) => listed.id === system && listed.state === 'running') ? node : null;
      } catch {
        return null;
      }
    }),
  );
  return answers.filter((node): node is string => node !== null);
}

/** Samples every 100 ms until stopped: every sample in which two nodes reported the system running. */
export function doubleRunSampler(count: () => Promise<string[]>): { stop: () => Promise<{ samples: number; doubles: string[] }> } {
  let samples = 0;
  const doubles: string[] = [];
  const inFlight = new Set<Promise<void>>();
  const timer = setInterval(() => {
    const at = new Date().toISOString();
    const sample = count().then((nodes) => {
      samples += 1;
      if (nodes.length > 1) doubles.push(`${at}: running on ${nodes.join(' and ')}`);
    });
    inFlight.add(sample);
    void sample.finally(() => inFlight.delete(sample));
  }, 100);
  return {
    stop: async () => {
      clearInterval(timer);
      await Promise.all(inFlight);
      return { samples, doubles };
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
