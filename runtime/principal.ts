import { AcpError } from './errors.js';
import { formatPath, parsePath } from './path.js';

/** What an API token may do: `auditor` reads and watches, `operator` also runs things, `admin` everything. */
export const ROLES = ['admin', 'operator', 'auditor'] as const;
export type Role = (typeof ROLES)[number];

/**
 * Who sent a message. The runtime stamps it from where the message really came from (the
 * connection's proven key, token or certificate, or the actor whose ref was used); no caller
 * ever fills it in.
 */
export type Principal =
  /**
   * The API key: the node's own administrator. `via: 'agent'`: a script that presented it over
   * the TLS agent rather than this node's socket (what only this node's own sockets may do, it may not).
   */
  | { readonly kind: 'operator'; readonly via?: 'agent' }
  /** An API token, by id, with its role (and `via`, as for the operator). */
  | { readonly kind: 'token'; readonly id: string; readonly role: Role; readonly via?: 'agent' }
  /**
   * A peer node's agent, proven by its certificate. `for` is whom it relays for (an actor on that
   * node, its operator or a token); absent, the node speaks for itself.
   */
  | { readonly kind: 'node'; readonly node: string; readonly for?: RelayedPrincipal }
  /** An actor of this daemon: inline, in a worker thread, or in a child process. */
  | { readonly kind: 'actor'; readonly path: string };

export type RelayedPrincipal = Exclude<Principal, { kind: 'node' }>;

export const OPERATOR: Principal = { kind: 'operator' };

export function actorPrincipal(path: string): Principal {
  return { kind: 'actor', path };
}

/** One line, for logs, errors and the wire: `operator`, `token:<id>:<role>`, `node:<n>`, `node:<n>|actor:<path>`. */
export function formatPrincipal(principal: Principal): string {
  switch (principal.kind) {
    case 'operator':
      return principal.via ? 'operator@agent' : 'operator';
    case 'token':
      return `token:${principal.id}:${principal.role}${principal.via ? '@agent' : ''}`;
    case 'actor':
      return `actor:${principal.path}`;
    case 'node':
      return principal.for ? `node:${principal.node}|${formatPrincipal(principal.for)}` : `node:${principal.node}`;
    default: {
      const unreachable: never = principal;
      return String(unreachable);
    }
  }
}

const TOKEN_ID = /^[a-z0-9]{8,32}$/;
const NODE = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/**
 * Reads what a peer node says it relays for (the `from` of its frames). Only one hop, and only
 * what a node may vouch for: its own actors, its operator, a token. Throws on anything else.
 */
export function parseRelayed(given: string): RelayedPrincipal {
  let text = given;
  const refuse = (why: string) => new AcpError('ACP_ERR_AUTH_FORBIDDEN', `a relayed sender ${JSON.stringify(text.slice(0, 100))} ${why}`);
  const via = text.endsWith('@agent') ? ({ via: 'agent' } as const) : {};
  if (via.via) text = text.slice(0, -'@agent'.length);
  if (text === 'operator') return { kind: 'operator', ...via };
  if (text.startsWith('actor:') && !via.via) {
    const path = parsePath(text.slice('actor:'.length));
    return { kind: 'actor', path: formatPath(path) };
  }
  if (text.startsWith('token:')) {
    const [, id = '', role = ''] = text.split(':');
    if (!TOKEN_ID.test(id) || !(ROLES as readonly string[]).includes(role)) throw refuse('is not token:<id>:<role>');
    return { kind: 'token', id, role: role as Role, ...via };
  }
  throw refuse("is not one of operator, token:<id>:<role> or actor:<path>");
}

/**
 * Principals a peer relayed before, each checked once: every frame from a peer names its sender,
 * and a peer relays for few. Bounded: emptied when full. The entries are frozen, so sharing one is safe.
 */
const relayed = new Map<string, Principal>();
const RELAYED_MAX = 4096;

/** The principal of a request that a peer node's agent delivers, checked: a node vouches only for its own actors. */
export function relayedBy(node: string, from: string | undefined): Principal {
  const key = from === undefined ? node : `${node}\u0000${from}`;
  const known = relayed.get(key);
  if (known !== undefined) return known;
  const principal = relayedUncached(node, from);
  if (relayed.size >= RELAYED_MAX) relayed.clear();
  relayed.set(key, principal);
  return principal;
}

function relayedUncached(node: string, from: string | undefined): Principal {
  if (!NODE.test(node)) throw new AcpError('ACP_ERR_AUTH_FORBIDDEN', `peer name ${JSON.stringify(node)} is not a valid node name`);
  if (from === undefined) return Object.freeze({ kind: 'node', node });
  const forWhom = parseRelayed(from);
  if (forWhom.kind === 'actor' && parsePath(forWhom.path).node !== node) {
    throw new AcpError('ACP_ERR_AUTH_FORBIDDEN', `node '${node}' relayed a message from ${forWhom.path}, an actor of another node; a node speaks only for its own actors`);
  }
  return Object.freeze({ kind: 'node', node, for: Object.freeze(forWhom) });
}

/** The node itself, over its own agent connection, relaying for nobody. */
export function directPeer(sender: Principal): string | undefined {
  return sender.kind === 'node' && sender.for === undefined ? sender.node : undefined;
}

/** Whom a request really comes from: a relayed principal, or the sender itself. */
export function origin(sender: Principal): Principal {
  return sender.kind === 'node' && sender.for ? sender.for : sender;
}

/** The node an actor principal lives on and its path, for the sender rules. */
export function actorOf(sender: Principal, selfNode: string): { node: string; path: string } | undefined {
  if (sender.kind === 'actor') return { node: selfNode, path: sender.path };
  if (sender.kind === 'node' && sender.for?.kind === 'actor') return { node: sender.node, path: sender.for.path };
  return undefined;
}

/** Reads back what formatPrincipal wrote (the daemon to its own child processes). */
export function parsePrincipal(text: string): Principal {
  if (text.startsWith('node:')) {
    const bar = text.indexOf('|');
    const node = bar < 0 ? text.slice('node:'.length) : text.slice('node:'.length, bar);
    return relayedBy(node, bar < 0 ? undefined : text.slice(bar + 1));
  }
  return parseRelayed(text);
}
