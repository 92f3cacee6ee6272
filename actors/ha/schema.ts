/** The HA service's messages (its zod schema) and who may send each (its authority table). */
import { z } from 'zod';
import type { AuthorityTable } from '../../runtime/authority.js';
import { nameSchema } from '../../runtime/path.js';
import { serviceInfoSchema } from '../kit.js';
import { haMessageSchema, HA_MESSAGE_TYPES } from './protocol.js';

const term = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

export const haSchema = z.discriminatedUnion('type', [
  serviceInfoSchema,
  /** What this node's HA service knows: its local manager, and the HA manager's view when it is the primary. */
  z.strictObject({ type: z.literal('ha.show') }),
  z.strictObject({ type: z.literal('ha.tick') }),
  /** The node shuts down cleanly (sent by the daemon): drain its HA systems by its shutdown policy; `host` says whether the host reboots or powers off too. */
  z.strictObject({ type: z.literal('ha.drain'), host: z.enum(['reboot', 'poweroff']).nullable() }),
  z.strictObject({ type: z.literal('ha.monitor'), status: z.unknown() }),
  z.strictObject({ type: z.literal('ha.guests'), epoch: z.number().int(), systems: z.array(z.unknown()) }),
  z.strictObject({ type: z.literal('ha.done'), system: nameSchema, op: z.enum(['start', 'stop', 'migrate']), ok: z.boolean(), view: z.unknown().optional(), error: z.string().max(2000).optional() }),
  z.strictObject({ type: z.literal('ha.loaded'), term, persisted: z.unknown() }),
  z.strictObject({ type: z.literal('ha.persisted'), term, ok: z.boolean(), error: z.string().max(2000).optional() }),
  ...haMessageSchema.options,
]);
export type HaServiceMessage = z.infer<typeof haSchema>;

const thisHa = { internal: [{ service: 'ha', nodes: 'self' }] } as const;
/** Reports and grants: from the HA service of any node of the cluster (the primary reports to itself too). */
const clusterHa = { internal: [{ service: 'ha', nodes: 'any' }] } as const;

export const haAuthority: AuthorityTable = {
  'service.info': 'read',
  'ha.show': 'read',
  'ha.tick': thisHa,
  'ha.drain': { internal: [{ service: 'framework', nodes: 'self' }] },
  'ha.monitor': thisHa,
  'ha.guests': thisHa,
  'ha.done': thisHa,
  'ha.loaded': thisHa,
  'ha.persisted': thisHa,
  ...Object.fromEntries(HA_MESSAGE_TYPES.map((type) => [type, clusterHa])),
};

