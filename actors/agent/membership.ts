import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { ActorContext } from '../../runtime/actor.js';
import { AcpError, errorMessage } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import { NAME_PATTERN } from '../../runtime/path.js';
import { formatPrincipal, type Principal } from '../../runtime/principal.js';
import { objectKey } from '../model.js';
import type { Revocations } from './revocations.js';

const hexKey = z.string().regex(/^[0-9a-f]{64}$/, 'must be 32 bytes in hex');

export const membershipMessages = [
  /** Takes a node out of the cluster: its certificate is revoked on every node, its records removed. */
  z.strictObject({ type: z.literal('agent.remove-node'), node: z.string().regex(NAME_PATTERN, 'must be a node name') }),
  /** New cluster key and API key for every live node, without a restart. */
  z.strictObject({ type: z.literal('agent.rotate-keys') }),
  /** From the agent that rotates: the keys to use from now on. */
  z.strictObject({ type: z.literal('agent.install-keys'), clusterKey: hexKey, apiKey: hexKey }),
] as const;

export interface MembershipEnv {
  readonly ctx: ActorContext;
  readonly revocations: Revocations;
  /** The nodes this agent knows (addresses or links), itself excluded. */
  peers(): string[];
  /** Forget a removed node: close its links, drop its address. */
  drop(node: string): void;
  /** Writes the keys to the home and uses the API key from now on. */
  installKeys(keys: { apiKey: string; clusterKey: string }): void;
}

/** Node removal and key rotation: what `acp node rm` and `acp cluster rotate-keys` ask of the agent. */
export class Membership {
  constructor(private readonly env: MembershipEnv) {}

  private get cdb() {
    return this.env.ctx.ref(`acp://${this.env.ctx.node.cluster}/${this.env.ctx.node.node}/cdb`);
  }

  async removeNode(node: string, by: Principal): Promise<Message> {
    const { ctx, revocations } = this.env;
    if (node === ctx.node.node) throw new AcpError('ACP_ERR_TARGET_IS_SELF', `a node cannot remove itself: run acp node rm ${node} on another node of the cluster`);
    const revokedAt = new Date().toISOString();
    // The revocation first: once it is written, every agent it reaches refuses the node.
    await this.cdb.ask({ type: 'cdb.put', key: objectKey('revocation', node), value: { name: node, revokedAt, by: formatPrincipal(by) } }, { timeoutMs: 10_000 });
    revocations.set(node, Date.parse(revokedAt));
    this.env.drop(node);
    await this.cdb.ask({ type: 'cdb.delete', key: objectKey('node', node) }, { timeoutMs: 10_000 }).catch((error: unknown) => {
      if (!(error instanceof AcpError && error.code === 'ACP_ERR_CDB_NOT_FOUND')) throw error;
    });
    ctx.log.warn({ node, by: formatPrincipal(by) }, 'node removed from the cluster: its certificate is revoked');
    return { type: 'agent.node-removed', node, revokedAt, hint: 'the removed node still knows the cluster and API keys: acp cluster rotate-keys replaces them' };
  }

  /** New keys go to every live peer, then here; a peer that cannot take them is named in the answer. */
  async rotateKeys(): Promise<Message> {
    const { ctx } = this.env;
    const keys = { clusterKey: randomBytes(32).toString('hex'), apiKey: randomBytes(32).toString('hex') };
    const installed: string[] = [];
    const failed: { node: string; reason: string }[] = [];
    await Promise.all(
      this.env.peers().map(async (node) => {
        try {
          await ctx.ref(`acp://${ctx.node.cluster}/${node}/agent`).ask({ type: 'agent.install-keys', ...keys }, { timeoutMs: 10_000 });
          installed.push(node);
        } catch (error) {
          failed.push({ node, reason: errorMessage(error) });
        }
      }),
    );
    this.install(keys);
    installed.push(ctx.node.node);
    ctx.log.warn({ installed, failed: failed.map((entry) => entry.node) }, 'cluster keys rotated');
    return { type: 'agent.keys-rotated', installed: installed.sort(), failed };
  }

  install(keys: { apiKey: string; clusterKey: string }): Message {
    this.env.installKeys(keys);
    // The CDB signs and checks multicast with the cluster key: it reads the new one now.
    this.cdb.tell({ type: 'cdb.sync.rekey' });
    return { type: 'agent.keys-installed', node: this.env.ctx.node.node };
  }
}
