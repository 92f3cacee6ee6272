import type { FastifyRequest } from 'fastify';
import { keysMatch } from '../actors/api/session-options.js';
import { AcpError } from '../runtime/errors.js';
import { OPERATOR, type Principal } from '../runtime/principal.js';
import type { TokenBook } from '../runtime/tokens.js';

export const SESSION_COOKIE = 'acp_session';

export interface WebAuth {
  /** The API key (read at each request: rotation changes it). */
  apiKey(): string;
  tokens: TokenBook;
  /** The principal of a live web session (throws when it expired or was revoked). */
  session(id: string): Principal;
}

/**
 * Who a REST request speaks for: `Authorization: Bearer <token>` with an API token (its role) or
 * the API key (the operator). No credentials is a refusal naming what to send; what the principal
 * may do is then decided by the relay, as for every other sender.
 */
export function principalOf(request: FastifyRequest, auth: WebAuth): Principal {
  const header = request.headers.authorization;
  const match = typeof header === 'string' ? /^Bearer\s+(\S+)$/i.exec(header) : null;
  if (!match) {
    const cookie = request.cookies[SESSION_COOKIE];
    if (cookie) return auth.session(cookie);
    throw new AcpError('ACP_ERR_AUTH_BAD_TOKEN', 'this needs credentials: log in, or send "Authorization: Bearer <token>" with an API token (acp token api create)');
  }
  const secret = match[1]!;
  if (secret.startsWith('acp_')) {
    const record = auth.tokens.verify(secret);
    return { kind: 'token', id: record.id, role: record.role };
  }
  if (keysMatch(secret, auth.apiKey())) return OPERATOR;
  throw new AcpError('ACP_ERR_AUTH_BAD_TOKEN', 'the bearer is neither an API token nor the API key');
}

/** The HTTP status for an error's kind. */
export function statusFor(error: AcpError): number {
  switch (error.kind) {
    case 'unauthorized':
      return 401;
    case 'forbidden':
      return 403;
    case 'bad-request':
    case 'rejected-by-schema':
      return 400;
    case 'not-found':
    case 'no-such-actor':
      return 404;
    case 'conflict':
      return 409;
    case 'timeout':
      return 504;
    case 'node-unreachable':
      return 502;
    default:
      return 500;
  }
}
