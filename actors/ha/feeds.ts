/**
 * What the HA service follows in the CDB, kept current by watches: HA systems' objects
 * (object/system/*), nodes' objects (maintenance, witness, shutdown policy: object/node/*) and the
 * capacity each node's HA service published in its meta (meta/node/<n>@<n>).
 */
import type { ActorContext } from '../../runtime/actor.js';
import { CdbFeed } from '../cdb-feed.js';
import type { SystemObject } from '../model.js';
import { capacityOf, parseHaSystem, shutdownPolicyIn } from './inputs.js';
import type { ShutdownPolicy } from './protocol.js';

export interface HaNodeObject {
  witness?: boolean;
  maintenance?: boolean;
  shutdownPolicy?: ShutdownPolicy;
}

export class HaClusterFeeds {
  readonly specs = new Map<string, SystemObject>();
  readonly capacity = new Map<string, { memoryMiB: number; vcpus: number }>();
  readonly nodeObjects = new Map<string, HaNodeObject>();
  readonly feeds: readonly CdbFeed[];

  constructor(ctx: ActorContext) {
    const systems = new CdbFeed(ctx, 'object/system/', (records) => {
      for (const record of records) {
        if (!record.key.startsWith('object/system/')) continue;
        const id = record.key.slice('object/system/'.length);
        const spec = record.deleted ? undefined : parseHaSystem(record.value);
        if (spec) this.specs.set(id, spec);
        else this.specs.delete(id);
      }
    });
    const nodes = new CdbFeed(ctx, 'object/node/', (records) => {
      for (const record of records) {
        if (!record.key.startsWith('object/node/')) continue;
        const name = record.key.slice('object/node/'.length);
        const value = record.value as { witness?: unknown; maintenance?: unknown; shutdownPolicy?: unknown } | null;
        if (record.deleted || !value) this.nodeObjects.delete(name);
        else this.nodeObjects.set(name, { witness: value.witness === true, maintenance: value.maintenance === true, shutdownPolicy: shutdownPolicyIn(value.shutdownPolicy) });
      }
    });
    const meta = new CdbFeed(ctx, 'meta/node/', (records) => {
      for (const record of records) {
        const match = /^meta\/node\/([^@]+)@([^@]+)$/.exec(record.key);
        if (!match || match[1] !== match[2]) continue;
        const cap = record.deleted ? undefined : capacityOf(record.value);
        if (cap) this.capacity.set(match[1]!, cap);
        else this.capacity.delete(match[1]!);
      }
    });
    this.feeds = [systems, nodes, meta];
  }
}
