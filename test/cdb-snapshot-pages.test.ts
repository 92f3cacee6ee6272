import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { createCdb } from '../actors/cdb/index.js';
import type { SnapshotPage } from '../actors/cdb/sync-protocol.js';
import type { StoredRecord } from '../adapters/store.js';
import { DeferredReply } from '../runtime/actor.js';
import { encodedLength } from '../runtime/codec.js';
import type { Message } from '../runtime/messages.js';
import { actorPrincipal } from '../runtime/principal.js';
import { stubContext } from './helpers/stub-context.js';

/** What the system lets through to these messages: another node's CDB (the authority is the system's, checked before receive). */
const PEER = actorPrincipal('acp://lab/n2/cdb');
const PAGE_BYTES = 1024 * 1024;

/**
 * The CDB of n1 on a stub context, syncing in unicast mode with a peer that never answers (its
 * sends fail and are counted), so snapshot pages can be asked of it directly.
 */
async function syncingCdb(t: ExecutionContext): Promise<(message: Message) => Promise<Message>> {
  const dir = mkdtempSync(join(tmpdir(), 'acp-cdb-pages-'));
  const { ctx } = stubContext('acp://lab/n1/cdb');
  const config = { peers: ['127.0.0.1:9'], gateways: [], digestMs: 60_000, suspectAfterMs: 1500, downAfterMs: 2500, repairKeep: 20_000 };
  const cdb = createCdb(ctx, { storePath: join(dir, 'cdb.mdb'), maxMemoryKeys: 1000, statsHistory: 10, sync: { config, clusterKey: 'ab'.repeat(32), faults: false, seeds: [] } });
  await cdb.started?.();
  t.teardown(async () => {
    await cdb.stopping?.('test over');
    rmSync(dir, { recursive: true, force: true });
  });
  return async (message) => {
    const reply = await cdb.receive(message, PEER);
    return (reply instanceof DeferredReply ? await reply.promise : reply) as Message;
  };
}

const wall = Date.now() - 60_000;
const record = (key: string, origin: string, value: Record<string, unknown>, n: number): StoredRecord => ({ key, value, version: { wall: wall + n, logical: 0, node: origin }, origin });

/** Every page of a pull, following the cursors. */
async function pull(ask: (message: Message) => Promise<Message>, request: Record<string, unknown>): Promise<(Message & SnapshotPage)[]> {
  const pages: (Message & SnapshotPage)[] = [];
  let cursor: string | undefined;
  do {
    const page = (await ask({ type: 'cdb.sync.snapshot', limit: 5000, ...request, ...(cursor === undefined ? {} : { cursor }) })) as Message & SnapshotPage;
    pages.push(page);
    cursor = page.cursor;
  } while (cursor !== undefined && pages.length < 100);
  return pages;
}

test('a page of one origin that wrote little stops after 20,000 records looked at, with a cursor, and the pull still gets all of them', async (t) => {
  const ask = await syncingCdb(t);
  const network = (name: string) => ({ name, type: 'bridge', mtu: 1500 });
  const theirs = ['object/network/a-00000', 'object/network/a-12500', 'object/network/a-24999'];
  for (let at = 0; at < 25_000; at += 5000) {
    const records = Array.from({ length: 5000 }, (_, index) => {
      const key = `object/network/a-${String(at + index).padStart(5, '0')}`;
      return record(key, theirs.includes(key) ? 'n3' : 'n2', network(key.slice('object/network/'.length)), at + index);
    });
    t.like(await ask({ type: 'cdb.merge', records }), { type: 'cdb.merged', applied: 5000 });
  }
  const pages = await pull(ask, { origin: 'n3' });
  t.deepEqual(pages.flatMap((page) => page.records.map((stored) => stored.key)), theirs);
  t.true(pages.length >= 2, `${pages.length} pages`);
  t.truthy(pages[0]!.cursor, 'the first page stops before the end of the store');
  t.true(pages[0]!.cursor! < 'object/network/a-24999', `the first page stops at ${pages[0]!.cursor}`);
  // All of n2's, in pages of at most 5,000.
  const all = await pull(ask, { origin: 'n2' });
  t.is(all.reduce((sum, page) => sum + page.records.length, 0), 25_000 - theirs.length);
  t.true(all.every((page) => page.records.length <= 5000));
});

test('a page stops before a record that would take it past 1 MiB, and counts its bytes as the encoder writes them', async (t) => {
  const ask = await syncingCdb(t);
  const records = Array.from({ length: 8 }, (_, index) => record(`meta/system/big-${index}@n3`, 'n3', { pad: String(index).repeat(300_000) }, index));
  t.like(await ask({ type: 'cdb.merge', records }), { type: 'cdb.merged', applied: 8 });
  const pages = await pull(ask, { origin: 'n3' });
  t.deepEqual(pages.flatMap((page) => page.records.map((stored) => stored.key)), records.map((stored) => stored.key));
  for (const page of pages) {
    t.true(page.records.length >= 1);
    t.true(page.bytes! <= PAGE_BYTES, `a page of ${page.bytes} bytes`);
    t.is(page.bytes, page.records.reduce((sum, stored) => sum + encodedLength(stored), 0));
  }
  t.is(pages.length, 3, '3 records of 300 kB a page, then 2');
});
