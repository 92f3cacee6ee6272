/**
 * The meta/stats table's sorted index: `range` answers what a filter and a sort of every key would,
 * through puts, tombstones, deletes, re-adds and eviction, page by page.
 */
import test from 'ava';
import type { StoredRecord } from '../adapters/store.js';
import { MemoryTable } from '../actors/cdb/memory.js';

/** A small deterministic generator (mulberry32), so a failure replays. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const record = (key: string, wall: number, deleted = false): StoredRecord => ({ key, value: deleted ? null : { wall }, version: { wall, logical: 0, node: 'n1' }, origin: 'n1', ...(deleted ? { deleted: true } : {}) });

/** Every record under `prefix` after `after`, by filtering and sorting all of them (the old way). */
function naive(all: Map<string, StoredRecord>, prefix: string, after: string | undefined, limit: number): StoredRecord[] {
  return [...all.keys()].filter((key) => key.startsWith(prefix) && (after === undefined || key > after)).sort().slice(0, limit).map((key) => all.get(key)!);
}

for (const seed of [1, 2, 3]) {
  test(`range matches a full sort through random puts, deletes and evictions (seed ${seed})`, (t) => {
    const next = random(seed);
    const maxKeys = 300;
    const table = new MemoryTable(maxKeys, 3);
    const model = new Map<string, StoredRecord>();
    const kinds = ['meta/system/', 'stats/system/', 'meta/node/', 'stats/node/'];
    const keyOf = () => `${kinds[Math.floor(next() * kinds.length)]}s-${Math.floor(next() * 400)}@n1`;
    let wall = 0;
    let checks = 0;
    for (let step = 0; step < 4000; step += 1) {
      const roll = next();
      const key = keyOf();
      wall += 1;
      if (roll < 0.55) {
        const fresh = !model.has(key);
        if (fresh && model.size >= maxKeys) {
          // The table makes room by evicting its oldest tombstones, or refuses; the model follows.
          const tombstones = [...model.values()].filter((r) => r.deleted).sort((a, b) => a.version.wall - b.version.wall);
          if (tombstones.length === 0) {
            t.throws(() => table.put(record(key, wall)), { message: /holds its limit/ });
            continue;
          }
          model.delete(tombstones[0]!.key);
        }
        table.put(record(key, wall));
        model.set(key, record(key, wall));
      } else if (roll < 0.75) {
        if (!model.has(key)) continue;
        table.put(record(key, wall, true));
        model.set(key, record(key, wall, true));
      } else if (roll < 0.85) {
        t.is(table.delete(key), model.delete(key));
      } else {
        const prefix = next() < 0.2 ? '' : next() < 0.5 ? kinds[Math.floor(next() * kinds.length)]! : kinds[Math.floor(next() * kinds.length)]!.slice(0, 5);
        const limit = 1 + Math.floor(next() * 40);
        // Page through the whole range, as cdb.list does, and compare each page.
        let after: string | undefined = next() < 0.3 ? keyOf() : undefined;
        for (;;) {
          const page = table.range(prefix, after, limit);
          const expected = naive(model, prefix, after, limit);
          // Compared as text (ava's deep diff is slow over thousands of pages); the first mismatch fails with both sides.
          if (JSON.stringify(page) !== JSON.stringify(expected)) t.deepEqual(page, expected, `step ${step}: range(${JSON.stringify(prefix)}, ${JSON.stringify(after)}, ${limit})`);
          checks += 1;
          if (page.length < limit) break;
          after = page.at(-1)!.key;
        }
      }
      if (table.size !== model.size) t.is(table.size, model.size, `step ${step}`);
    }
    t.is(table.size, model.size);
    t.true(checks > 300, `only ${checks} pages were compared`);
  });
}
