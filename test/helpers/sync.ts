import type { ExecutionContext } from 'ava';
import type { MemberView } from '../../actors/cdb/sync.js';
import type { SyncStatus } from '../../actors/cdb/sync-node.js';
import type { Message } from '../../runtime/messages.js';
import type { Harness } from '../../node/harness/index.js';
import { eventually } from './node.js';

/** A system object whose labels say who wrote it and when: every write is distinguishable. */
export function systemValue(key: string, labels: Record<string, string>): unknown {
  return { name: key, labels };
}

/** Puts `object/system/<id>` on `node`; resolves with the version once acknowledged (durable there). */
export async function put(h: Harness, node: string, id: string, labels: Record<string, string>): Promise<{ key: string; version: string; node: string }> {
  const client = await h.client(node);
  const key = `object/system/${id}`;
  const reply = await client.ask<Message & { version: string }>('cdb', { type: 'cdb.put', key, value: systemValue(id, labels) }, { timeoutMs: 15_000 });
  return { key, version: reply.version, node };
}

export async function objectHash(h: Harness, node: string): Promise<{ hash: string; records: number }> {
  return (await h.client(node)).ask<Message & { hash: string; records: number }>('cdb', { type: 'cdb.hash', prefix: 'object/system/' });
}

/** Waits until every named node holds the same system objects; returns their common hash. */
export async function converged(h: Harness, nodes: readonly string[], timeoutMs = 30_000): Promise<{ hash: string; records: number }> {
  return eventually(
    async () => {
      const hashes = await Promise.all(nodes.map((node) => objectHash(h, node)));
      return hashes.every((entry) => entry.hash === hashes[0]!.hash) ? hashes[0] : undefined;
    },
    timeoutMs,
    `${nodes.join(', ')} to hold the same objects`,
  );
}

export async function members(h: Harness, node: string): Promise<MemberView[]> {
  return (await (await h.client(node)).ask<Message & { nodes: MemberView[] }>('cdb', { type: 'cdb.nodes' })).nodes;
}

export async function syncStatus(h: Harness, node: string): Promise<SyncStatus> {
  return (await h.client(node)).ask<SyncStatus>('cdb', { type: 'cdb.sync.status' });
}

/** Version text `wall.logical@node` → comparable tuple, the CDB's order. */
function versionKey(version: string): [number, number, string] {
  const match = /^(\d+)\.(\d+)@(.+)$/.exec(version)!;
  return [Number(match[1]), Number(match[2]), match[3]!];
}

export function newer(a: string, b: string): boolean {
  const [wa, la, na] = versionKey(a);
  const [wb, lb, nb] = versionKey(b);
  return wa !== wb ? wa > wb : la !== lb ? la > lb : na > nb;
}

/**
 * Every acknowledged write is on `node`, unless a later acknowledged version of the same key
 * superseded it: what it holds for each key is the newest version acknowledged anywhere.
 */
export async function assertNoAcknowledgedWriteLost(t: ExecutionContext, h: Harness, node: string, writes: readonly { key: string; version: string }[]): Promise<void> {
  const newest = new Map<string, string>();
  for (const write of writes) {
    const known = newest.get(write.key);
    if (!known || newer(write.version, known)) newest.set(write.key, write.version);
  }
  const client = await h.client(node);
  let lost = 0;
  for (const [key, version] of newest) {
    const reply = await client.ask<Message & { record: { version: string } }>('cdb', { type: 'cdb.get', key }).catch(() => undefined);
    if (!reply || reply.record.version !== version) {
      lost += 1;
      if (lost <= 5) t.log(`${node}: ${key} holds ${reply?.record.version ?? 'nothing'}, the newest acknowledged is ${version}`);
    }
  }
  t.is(lost, 0, `${node} lost ${lost} of ${newest.size} acknowledged writes`);
}
