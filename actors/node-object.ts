/**
 * Writing a node's object (`object/node/<name>`) without losing what others put there: the node
 * itself owns `cluster`, `agent` and `witness`; an operator owns `votes` and `labels`. A writer
 * reads the record, changes only its own fields, and writes it back with a compare-and-set on the
 * version it read, so an operator's `votes: 0` survives a restart and a peer's agent address
 * survives the node's own write.
 */
import type { ActorRef } from '../runtime/actor.js';
import { nodeObjectSchema, objectKey, type NodeObject } from './model.js';
import { updateObject } from './object-update.js';

/** Fields set to `undefined` are removed. */
export type NodeObjectPatch = { readonly [K in keyof NodeObject]?: NodeObject[K] | undefined };

/** `existing` with `patch` applied; `undefined` when nothing would change. */
export function patchNodeObject(name: string, existing: unknown, patch: NodeObjectPatch): NodeObject | undefined {
  const parsed = nodeObjectSchema.safeParse(existing);
  const base: Record<string, unknown> = parsed.success ? { ...parsed.data } : { name };
  const next: Record<string, unknown> = { ...base, name };
  for (const [field, value] of Object.entries(patch)) {
    if (value === undefined) delete next[field];
    else next[field] = value;
  }
  const result = nodeObjectSchema.parse(next);
  const sorted = (value: object) => JSON.stringify(Object.fromEntries(Object.entries(value).sort(([a], [b]) => a.localeCompare(b))));
  return parsed.success && sorted(parsed.data) === sorted(result) ? undefined : result;
}

/** Reads the node's object and writes `patch` over it (compare-and-set; one retry on a conflict). Resolves to whether it wrote. */
export function upsertNodeObject(cdb: ActorRef, name: string, patch: NodeObjectPatch, attempts = 2): Promise<boolean> {
  return updateObject(cdb, objectKey('node', name), (current) => patchNodeObject(name, current, patch), attempts, 5000);
}
