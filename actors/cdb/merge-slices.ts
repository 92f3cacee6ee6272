/** A large merge spread over turns of the event loop (the real sync env's merge; the simulator merges at once). */
import type { StoredRecord } from '../../adapters/store.js';

/**
 * Records merged in one turn of the event loop. A snapshot page (5,000 records) merged at once
 * holds the loop about 100 ms, and with it the request for the next page, which then travels only
 * after the merge: sliced, the request leaves during the first slices and the page after arrives
 * while this one is merged.
 */
export const MERGE_SLICE = 1000;

/**
 * `merge` of `records`, a slice per turn of the event loop; resolves once every slice is durable.
 * Once a slice has failed (a store that refuses, a CDB stopping) the rest are not merged, and it
 * fails with that slice's error.
 */
export async function mergeInSlices(records: readonly StoredRecord[], merge: (records: readonly StoredRecord[]) => Promise<void>): Promise<void> {
  if (records.length <= MERGE_SLICE) return merge(records);
  const slices: Promise<void>[] = [];
  let failed = false;
  for (let at = 0; at < records.length && !failed; at += MERGE_SLICE) {
    if (at > 0) await new Promise<void>((resolve) => setImmediate(resolve));
    if (failed) break;
    const slice = merge(records.slice(at, at + MERGE_SLICE));
    slice.catch(() => {
      failed = true; // awaited below, after the last slice
    });
    slices.push(slice);
  }
  await Promise.all(slices);
}
