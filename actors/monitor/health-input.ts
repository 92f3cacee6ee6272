/**
 * Gathers the health score's input from the local CDB (meta and stats of every node, services and
 * systems; the membership and sync lag the CDB tracks) and the alarms the monitor follows. The
 * primary's own failure detector overrides the CDB's view of liveness where it has one.
 */
import type { ActorRef } from '../../runtime/actor.js';
import type { Message } from '../../runtime/messages.js';
import type { MemberView } from '../cdb/sync.js';
import type { RecordView } from '../cdb/index.js';
import { parseKey, type AlarmObject } from '../model.js';
import type { Liveness } from './election.js';
import type { HealthInput } from './health.js';

const PAGE = 10_000;

async function listAll(cdb: ActorRef, prefix: string): Promise<RecordView[]> {
  const records: RecordView[] = [];
  let cursor: string | undefined;
  do {
    const page = await cdb.ask<Message & { records: RecordView[]; cursor?: string }>({ type: 'cdb.list', prefix, limit: PAGE, ...(cursor === undefined ? {} : { cursor }) }, { timeoutMs: 10_000 });
    records.push(...page.records);
    cursor = page.cursor;
  } while (cursor !== undefined);
  return records;
}

const objectOf = (value: unknown): Record<string, unknown> => (typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : {});

export async function gatherHealthInput(cdb: ActorRef, members: readonly string[], detector: ReadonlyMap<string, Liveness> | null, alarms: readonly AlarmObject[]): Promise<HealthInput> {
  const [membership, meta, stats, pools] = await Promise.all([
    cdb.ask<Message & { nodes: MemberView[] }>({ type: 'cdb.nodes' }, { timeoutMs: 5000 }),
    listAll(cdb, 'meta/'),
    listAll(cdb, 'stats/node/'),
    listAll(cdb, 'stats/storage/pool/'),
  ]);
  const cdbView = new Map(membership.nodes.map((view) => [view.node, view]));
  const input: HealthInput = { nodes: [], services: [], systems: [], syncLag: [], filesystems: [], certificates: [], loopDelayP99: [], alarms: [] };
  for (const name of members) {
    const state = detector?.get(name) ?? cdbView.get(name)?.state ?? 'down';
    input.nodes.push({ name, state });
    const lag = cdbView.get(name)?.syncLag;
    if (typeof lag === 'number') input.syncLag.push({ node: name, lag });
  }
  for (const record of meta) {
    if (record.deleted) continue;
    const parsed = parseKey(record.key);
    const value = objectOf(record.value);
    const node = parsed.node ?? '';
    const state = typeof value['state'] === 'string' ? value['state'] : 'unknown';
    if (parsed.type === 'node') {
      const p99 = objectOf(value['eventLoopDelayMs'])['p99'];
      if (typeof p99 === 'number') input.loopDelayP99.push({ node, ms: p99 });
      const notAfter = typeof value['certNotAfter'] === 'string' ? Date.parse(value['certNotAfter']) : Number.NaN;
      if (Number.isFinite(notAfter)) input.certificates?.push({ node, notAfter });
    } else if (parsed.type === 'system') {
      input.systems.push({ id: parsed.id, node, state });
    } else if (parsed.type.startsWith('service/')) {
      input.services.push({ node, service: parsed.type.slice('service/'.length), state });
    }
  }
  for (const record of stats) {
    if (record.deleted) continue;
    const node = parseKey(record.key).node ?? '';
    const filesystems = objectOf(record.value)['filesystems'];
    if (!Array.isArray(filesystems)) continue;
    for (const fs of filesystems) {
      const entry = objectOf(fs);
      if (typeof entry['mount'] === 'string' && typeof entry['usedBytes'] === 'number' && typeof entry['sizeBytes'] === 'number') {
        input.filesystems.push({ node, mount: entry['mount'], usedBytes: entry['usedBytes'], sizeBytes: entry['sizeBytes'] });
      }
    }
  }
  // The storage service's pools: `stats/storage/pool/<id>@<node>` is { total, used, available } in bytes.
  for (const record of pools) {
    if (record.deleted) continue;
    const parsed = parseKey(record.key);
    const value = objectOf(record.value);
    if (parsed.node !== undefined && typeof value['total'] === 'number' && typeof value['used'] === 'number') {
      input.filesystems.push({ node: parsed.node, mount: `pool ${parsed.id}`, usedBytes: value['used'], sizeBytes: value['total'], pool: parsed.id });
    }
  }
  for (const alarm of alarms) if (alarm.open) input.alarms.push({ id: alarm.name, severity: alarm.severity, subject: alarm.subject });
  return input;
}
