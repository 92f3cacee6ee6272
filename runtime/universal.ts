import type { NodeIdentity } from './actor.js';
import { AcpError } from './errors.js';
import { universalSchema, type Message, type Pong } from './messages.js';
import type { Replier } from './delivery.js';
import { describeIssues } from './validate.js';

/**
 * The messages every actor answers. Shared with the thread host, which runs it on the worker side.
 * `chaos.stall` answers first and then holds the mailbox, so the asker is not held with it.
 */
export async function runUniversal(
  message: Message,
  reply: Replier | undefined,
  system: { identity: NodeIdentity; faultsEnabled: boolean },
  path: string,
  generation: number,
): Promise<Message | void> {
  if (message.type.startsWith('chaos.')) requireFaults(system.faultsEnabled);
  const result = universalSchema.safeParse(message);
  if (!result.success) {
    throw new AcpError('ACP_ERR_SCHEMA_REJECTED', `message rejected by ${path}: ${describeIssues(result.error.issues)}`);
  }
  const parsed = result.data;
  switch (parsed.type) {
    case 'ping': {
      const pong: Pong = { type: 'pong', path, incarnation: system.identity.incarnation, generation };
      return pong;
    }
    case 'chaos.crash':
      throw new AcpError('ACP_ERR_CHAOS_CRASH', `crash injected by chaos${parsed.reason ? `: ${parsed.reason}` : ''}`);
    case 'chaos.stall': {
      reply?.resolve({ type: 'stalling', path, ms: parsed.ms });
      await new Promise((resolve) => setTimeout(resolve, parsed.ms));
      return undefined;
    }
    default: {
      const unreachable: never = parsed;
      return unreachable;
    }
  }
}

function requireFaults(enabled: boolean): void {
  if (!enabled) {
    throw new AcpError(
      'ACP_ERR_FAULTS_DISABLED',
      'fault injection is disabled on this node; restart it with `acp up --faults` to allow chaos commands',
    );
  }
}
