/**
 * Read, change, write back with a compare-and-set on the version read: a writer that changes a
 * few fields of an object keeps what others wrote meanwhile, and never brings back an object that
 * was deleted (unless its change makes one from nothing on purpose).
 */
import type { ActorRef } from '../runtime/actor.js';
import { AcpError } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import type { RecordView } from './cdb/index.js';

/**
 * `change` gets the live value (`undefined`: absent or deleted) and returns the value to write, or
 * `undefined` to write nothing. Retried on a conflict (someone wrote between the read and the
 * write) with the newer value, `attempts` times in all. Resolves to whether it wrote.
 */
export async function updateObject(cdb: ActorRef, key: string, change: (current: unknown) => unknown, attempts = 3, timeoutMs = 10_000): Promise<boolean> {
  const current = await liveRecord(cdb, key, timeoutMs);
  const value = change(current?.value);
  if (value === undefined) return false;
  try {
    await cdb.ask({ type: 'cdb.cas', key, value, expect: current?.version ?? null }, { timeoutMs });
    return true;
  } catch (error) {
    if (attempts > 1 && error instanceof AcpError && error.code === 'ACP_ERR_CDB_CONFLICT') return updateObject(cdb, key, change, attempts - 1, timeoutMs);
    throw error;
  }
}

/** The record at `key`, or `undefined` when it is absent or deleted. */
export function liveRecord(cdb: ActorRef, key: string, timeoutMs = 10_000): Promise<RecordView | undefined> {
  return cdb.ask<Message & { record: RecordView }>({ type: 'cdb.get', key }, { timeoutMs }).then(
    (reply) => (reply.record.deleted ? undefined : reply.record),
    (error: unknown) => {
      if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_NOT_FOUND') return undefined;
      throw error;
    },
  );
}
