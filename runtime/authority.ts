import { AcpError } from './errors.js';
import { parsePath } from './path.js';
import { actorOf, formatPrincipal, origin, type Principal, type Role } from './principal.js';

/**
 * Who may send a message type, as data beside each service's schema:
 * - `read`: any authenticated sender (auditor, operator and admin tokens, the home's key, the
 *   cluster's actors), also relayed by a peer node;
 * - `operate`: the operator role and above;
 * - `admin`: the admin role (or the home's key);
 * - `local-admin`: the admin role on this node's own sockets, or this node's actors; never relayed;
 * - `internal`: only the actors named, e.g. the hypervisor of the same node.
 */
export type Access = 'read' | 'operate' | 'admin' | 'local-admin' | { readonly internal: readonly SenderRule[] };

/** An actor allowed to send an internal message: the service path on this node, on peers, or either. */
export interface SenderRule {
  /** Segments after the node, e.g. `hypervisor` or `hypervisor/vmm`. */
  readonly service: string;
  readonly nodes: 'self' | 'peers' | 'any';
  /** Any actor below the service path too (e.g. every VMM under `hypervisor/vmm`). */
  readonly below?: boolean;
}

export type AuthorityTable = Readonly<Record<string, Access>>;

/** The messages every actor answers. */
export const universalAuthority: AuthorityTable = { ping: 'read', 'chaos.crash': 'admin', 'chaos.stall': 'admin' };

const RANK: Readonly<Record<Role, number>> = { auditor: 1, operator: 2, admin: 3 };

function roleNeeded(access: 'read' | 'operate' | 'admin' | 'local-admin'): Role {
  return access === 'read' ? 'auditor' : access === 'operate' ? 'operator' : 'admin';
}

function nodeOf(path: string): string | undefined {
  try {
    return parsePath(path).node;
  } catch {
    return undefined;
  }
}

function matches(rule: SenderRule, actor: { node: string; path: string }, self: { cluster: string; node: string }): boolean {
  if (rule.nodes === 'self' && actor.node !== self.node) return false;
  if (rule.nodes === 'peers' && actor.node === self.node) return false;
  let path;
  try {
    path = parsePath(actor.path);
  } catch {
    return false;
  }
  if (path.cluster !== self.cluster || path.node !== actor.node) return false;
  const segments = path.segments.join('/');
  return segments === rule.service || (rule.below === true && segments.startsWith(`${rule.service}/`));
}

function describeRule(rule: SenderRule): string {
  const where = rule.nodes === 'self' ? 'this node' : rule.nodes === 'peers' ? 'a peer node' : 'any node';
  return `${rule.service}${rule.below ? '/*' : ''} on ${where}`;
}

export interface AuthorityTarget {
  readonly cluster: string;
  /** This node: the one the target actor lives on. */
  readonly node: string;
  readonly path: string;
}

function refusal(sender: Principal, target: AuthorityTarget, messageType: string, why: string): AcpError {
  return new AcpError('ACP_ERR_AUTH_FORBIDDEN', `${formatPrincipal(sender)} may not send '${messageType}' to ${target.path}: ${why}`, {
    sender: formatPrincipal(sender),
    messageType,
  });
}

/**
 * The one decision: may `sender` send `messageType` to the actor at `target`, whose service
 * declared `table`? Returns the refusal, or undefined when allowed. A type the table does not name
 * is private to the cluster's actors (self-messages, events between actors).
 */
export function authorize(sender: Principal, target: AuthorityTarget, table: AuthorityTable | undefined, messageType: string): AcpError | undefined {
  const access = table?.[messageType] ?? universalAuthority[messageType];
  // A node vouches only for its own actors (relayedBy checks it on arrival; checked again here).
  if (sender.kind === 'node' && sender.for?.kind === 'actor' && nodeOf(sender.for.path) !== sender.node) {
    return refusal(sender, target, messageType, `node '${sender.node}' relays for an actor of another node`);
  }
  if (access === undefined) {
    return actorOf(sender, target.node) ? undefined : refusal(sender, target, messageType, 'it is private to the cluster’s own actors');
  }
  if (typeof access === 'object') {
    if (sentByInternal(sender, target, access.internal)) return undefined;
    return refusal(sender, target, messageType, `it is internal: only ${access.internal.map(describeRule).join(' or ')} sends it`);
  }
  if (access === 'local-admin' && (sender.kind === 'node' || ((sender.kind === 'operator' || sender.kind === 'token') && sender.via === 'agent'))) {
    return refusal(sender, target, messageType, "it is accepted only on this node's own API socket, not over the agent");
  }
  const who = origin(sender);
  switch (who.kind) {
    case 'actor':
      return undefined;
    case 'operator':
      return undefined;
    case 'token': {
      const need = roleNeeded(access);
      return RANK[who.role] >= RANK[need] ? undefined : refusal(sender, target, messageType, `it needs the ${need} role, and this token is ${who.role}`);
    }
    case 'node':
      // A node speaking for nobody in particular may read; anything else must say for whom.
      return access === 'read' ? undefined : refusal(sender, target, messageType, 'a peer node must relay it for an actor, its operator or a token');
    default: {
      const unreachable: never = who;
      return refusal(sender, target, messageType, `unknown sender ${String(unreachable)}`);
    }
  }
}

/** Whether `sender` is one of the cluster's actors that `rules` name (as seen by the actor at `target`). */
export function sentByInternal(sender: Principal, target: AuthorityTarget, rules: readonly SenderRule[]): boolean {
  const actor = actorOf(sender, target.node);
  return actor !== undefined && rules.some((rule) => matches(rule, actor, target));
}

/** Whether the sender holds at least `role` (actors and the home's key hold every role). */
export function hasRole(sender: Principal, role: Role): boolean {
  const who = origin(sender);
  if (who.kind === 'actor' || who.kind === 'operator') return true;
  if (who.kind === 'token') return RANK[who.role] >= RANK[role];
  return false;
}
