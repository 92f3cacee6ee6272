/** The agent's messages and who may send each. */
import { z } from 'zod';
import type { AuthorityTable } from '../../runtime/authority.js';
import { nameSchema } from '../../runtime/path.js';
import { serviceInfoSchema } from '../kit.js';
import { membershipMessages } from './membership.js';

export const agentSchema = z.discriminatedUnion('type', [
  serviceInfoSchema,
  z.strictObject({ type: z.literal('agent.peers') }),
  z.strictObject({ type: z.literal('agent.token'), ttlMs: z.number().int().min(1000).max(30 * 24 * 3_600_000).default(3_600_000) }),
  /** From a peer renewing its certificate: only the CA node signs, and only for the asking node. */
  z.strictObject({ type: z.literal('agent.sign'), csr: z.string().min(1).max(16_384) }),
  z.strictObject({ type: z.literal('agent.renew') }),
  /** Where does this node's agent listen, if this node knows? */
  z.strictObject({ type: z.literal('agent.lookup'), node: nameSchema }),
  /** Which node's agent listens at HOST:PORT? Dials it when not known (for --peers and --gateway). */
  z.strictObject({ type: z.literal('agent.identify'), address: z.string().max(300) }),
  ...membershipMessages,
  /** From this node's CDB: it heard `node` again after it was down, so a link waiting to reach it tries now. */
  z.strictObject({ type: z.literal('agent.peer-heard'), node: nameSchema }),
  /** Fault injection (daemon with --faults), from this node's Framework: cut or restore all peer traffic. */
  z.strictObject({ type: z.literal('agent.partition'), on: z.boolean() }),
]);

export type AgentMessage = z.input<typeof agentSchema>;

export interface PeerInfo {
  node: string;
  state: string;
  address: string | null;
  incarnation: number | null;
  queued: number;
  inFlight: number;
  lastSeenMs: number | null;
}

/** Who may send what to the agent (see runtime/authority.ts). */
export const agentAuthority: AuthorityTable = {
  'service.info': 'read',
  'agent.peers': 'read',
  'agent.lookup': 'read',
  // It dials out and records what answers: for this node's own sync and operator only.
  'agent.identify': 'local-admin',
  // A join token hands out the cluster key: minted on the CA node itself, by its administrator.
  'agent.token': 'local-admin',
  "agent.renew": 'local-admin',
  // A node's own agent asks the CA node to sign its renewed certificate.
  'agent.sign': { internal: [{ service: 'agent', nodes: 'peers' }] },
  'agent.remove-node': 'admin',
  'agent.rotate-keys': 'admin',
  // The agent that rotates the keys hands them to every other.
  'agent.install-keys': { internal: [{ service: 'agent', nodes: 'peers' }] },
  'agent.peer-heard': { internal: [{ service: 'cdb', nodes: 'self' }] },
  // The Framework's faults.partition (admin, --faults) sets it.
  'agent.partition': { internal: [{ service: 'framework', nodes: 'self' }] },
};
