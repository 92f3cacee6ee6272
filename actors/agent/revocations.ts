import { revocationObjectSchema } from '../model.js';

export const REVOCATION_PREFIX = 'object/revocation/';

/** A CDB record as watches deliver it (see actors/cdb). */
interface RecordLike {
  key: string;
  value: unknown;
  deleted?: true;
}

/**
 * The nodes removed from the cluster (acp node rm), as this node knows them from the CDB: each
 * with the moment from which its certificates no longer count. A node joining again under the
 * same name gets a new certificate, issued after that moment, and is accepted.
 */
export class Revocations {
  private readonly removed = new Map<string, number>();

  /** Applies records under object/revocation/; returns the nodes newly removed. */
  apply(records: readonly RecordLike[]): string[] {
    const added: string[] = [];
    for (const record of records) {
      const node = record.key.slice(REVOCATION_PREFIX.length);
      const parsed = record.deleted ? undefined : revocationObjectSchema.safeParse(record.value);
      const at = parsed?.success ? Date.parse(parsed.data.revokedAt) : Number.NaN;
      if (parsed?.success && parsed.data.name === node && Number.isFinite(at)) {
        if (!this.removed.has(node)) added.push(node);
        this.removed.set(node, at);
      } else {
        this.removed.delete(node);
      }
    }
    return added;
  }

  set(node: string, revokedAtMs: number): void {
    this.removed.set(node, revokedAtMs);
  }

  isRemoved(node: string): boolean {
    return this.removed.has(node);
  }

  /** A certificate for `node` valid from `validFromMs` was issued before the node's removal. */
  isRevoked(node: string | undefined, validFromMs: number | undefined): boolean {
    if (node === undefined) return false;
    const at = this.removed.get(node);
    if (at === undefined) return false;
    return validFromMs === undefined || !Number.isFinite(validFromMs) || validFromMs <= at;
  }
}
