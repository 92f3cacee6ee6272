import type { Message } from '../../runtime/messages.js';

/**
 * "No acknowledged CDB write lost", checked by a chaos run: while the scenario runs, a writer puts
 * `object/chaos/<run>-<slot>` (a few slots, each written again and again, through whichever node is
 * up, in turn) and records each write's outcome; at the end, once the live nodes agree (or a bound
 * has passed), every node must hold, for every slot, the newest acknowledged write or a newer one.
 * A write that failed or timed out is indeterminate: it may have landed, even later than a newer
 * acknowledged one (a node stopped mid-write applies it when it resumes), so finding it is no
 * violation; finding an older acknowledged one, a value never written, or nothing is.
 */

export const SLOTS = 8;

export interface ChaosWrite {
  key: string;
  seq: number;
  /** The node written through. */
  via: string;
  /** ms since the run started. */
  atMs: number;
  /** `acked`: the node answered the put; `indeterminate`: it refused, failed or did not answer in time. */
  outcome: 'acked' | 'indeterminate';
  /** Why it is indeterminate. */
  error?: string;
}

/** What one node holds under the run's prefix: key → the write's seq and via (undefined: no record). */
export type NodeView = Map<string, { seq: number; via: string }>;

export interface WriteViolation {
  invariant: 'write-lost';
  message: string;
  evidence: Record<string, unknown>;
}

export interface ChaosValue {
  name: string;
  run: string;
  seq: number;
  via: string;
}

export function slotKey(run: string, slot: number): string {
  return `object/chaos/${run}-${slot}`;
}

export function chaosValue(run: string, seq: number, via: string): { key: string; value: ChaosValue } {
  const slot = seq % SLOTS;
  return { key: slotKey(run, slot), value: { name: `${run}-${slot}`, run, seq, via } };
}

/** A node's records under the run's prefix (cdb.list answer) as a view; records of other shapes are kept with seq 0 (never written by the run). */
export function viewOf(records: readonly { key: string; value: unknown }[]): NodeView {
  const view: NodeView = new Map();
  for (const record of records) {
    const value = record.value as Partial<ChaosValue> | null;
    const seq = typeof value?.seq === 'number' ? value.seq : 0;
    view.set(record.key, { seq, via: typeof value?.via === 'string' ? value.via : '?' });
  }
  return view;
}

/** Whether every view holds the same keys with the same writes. */
export function converged(views: ReadonlyMap<string, NodeView>): boolean {
  const texts = [...views.values()].map((view) => JSON.stringify([...view].sort(([a], [b]) => a.localeCompare(b))));
  return texts.every((text) => text === texts[0]);
}

/** Checks the final views of the nodes against the writes made; one violation per node and slot at fault. */
export function checkWrites(writes: readonly ChaosWrite[], views: ReadonlyMap<string, NodeView>): WriteViolation[] {
  const violations: WriteViolation[] = [];
  const byKey = new Map<string, ChaosWrite[]>();
  for (const write of writes) byKey.set(write.key, [...(byKey.get(write.key) ?? []), write]);
  for (const [key, keyWrites] of [...byKey].sort(([a], [b]) => a.localeCompare(b))) {
    const acked = keyWrites.filter((write) => write.outcome === 'acked');
    if (acked.length === 0) continue;
    const newest = acked.reduce((a, b) => (b.seq > a.seq ? b : a));
    const bySeq = new Map(keyWrites.map((write) => [write.seq, write]));
    for (const [node, view] of views) {
      const found = view.get(key);
      const evidence = { node, key, newestAcked: newest, found: found ?? null };
      if (!found) {
        violations.push({ invariant: 'write-lost', message: `${node} has no ${key}: write ${newest.seq} through ${newest.via} was acknowledged`, evidence });
        continue;
      }
      const write = bySeq.get(found.seq);
      if (!write) {
        violations.push({ invariant: 'write-lost', message: `${node} holds ${key} = write ${found.seq}, which this run never made; write ${newest.seq} through ${newest.via} was acknowledged`, evidence });
      } else if (found.seq < newest.seq && write.outcome === 'acked') {
        violations.push({ invariant: 'write-lost', message: `${node} holds ${key} = write ${found.seq} (acknowledged earlier), not the newer acknowledged write ${newest.seq} through ${newest.via}`, evidence });
      }
    }
  }
  return violations;
}

export interface CdbAsker {
  ask<Reply extends Message = Message>(to: string, message: Message, options?: { timeoutMs?: number }): Promise<Reply>;
}

/** The records under `prefix` on one node (up to 10,000). */
export async function listPrefix(client: CdbAsker, prefix: string, timeoutMs: number): Promise<{ key: string; value: unknown }[]> {
  const reply = await client.ask<Message & { records: { key: string; value: unknown }[] }>('cdb', { type: 'cdb.list', prefix, limit: 10_000 }, { timeoutMs });
  return reply.records;
}
