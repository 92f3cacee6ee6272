import { randomBytes } from 'node:crypto';
import { AcpError } from '../runtime/errors.js';
import { formatPrincipal, type Principal } from '../runtime/principal.js';

/** A browser's login: its principal, until it expires or is revoked. */
export interface WebSession {
  readonly id: string;
  readonly principal: Principal;
  readonly createdMs: number;
  readonly expiresMs: number;
}

export interface SessionView {
  id: string;
  principal: string;
  created: string;
  expires: string;
}

export const SESSION_TTL_MS = 12 * 3600 * 1000;
export const LOGIN_CODE_TTL_MS = 60_000;

/**
 * The web sessions of this node and the one-time login codes `acp ui` prints. Pure state with an
 * injected clock: the webapi actor owns it and changes it only in its mailbox.
 */
export class WebSessions {
  private readonly sessions = new Map<string, WebSession>();
  private readonly codes = new Map<string, { principal: Principal; expiresMs: number }>();

  constructor(
    private readonly now: () => number,
    private readonly random: (bytes: number) => string = (bytes) => randomBytes(bytes).toString('base64url'),
    /**
     * Throws when the API token a session was opened with is revoked or expired: such a session
     * ends with its token, on every use (REST, displays) and in the list.
     */
    private readonly checkToken: (id: string) => void = () => undefined,
  ) {}

  /** A code that logs a browser in once, within a minute. */
  loginCode(principal: Principal): { code: string; expiresMs: number } {
    this.sweep();
    const code = this.random(24);
    const expiresMs = this.now() + LOGIN_CODE_TTL_MS;
    this.codes.set(code, { principal, expiresMs });
    return { code, expiresMs };
  }

  /** Trades a login code for a session; a code works once. */
  redeem(code: string): WebSession {
    this.sweep();
    const entry = this.codes.get(code);
    this.codes.delete(code);
    if (!entry) throw new AcpError('ACP_ERR_AUTH_BAD_TOKEN', 'this login link is unknown, used or expired: run acp ui again for a new one (it works once, within a minute)');
    return this.open(entry.principal);
  }

  open(principal: Principal): WebSession {
    this.sweep();
    const session: WebSession = { id: this.random(32), principal, createdMs: this.now(), expiresMs: this.now() + SESSION_TTL_MS };
    this.sessions.set(session.id, session);
    return session;
  }

  /** The live session with this id, or a refusal saying to log in again (reads only). */
  check(id: string): WebSession {
    const session = this.sessions.get(id);
    if (!session || session.expiresMs <= this.now()) {
      throw new AcpError('ACP_ERR_AUTH_BAD_TOKEN', 'the web session expired or was revoked: log in again');
    }
    if (session.principal.kind === 'token') {
      try {
        this.checkToken(session.principal.id);
      } catch (error) {
        throw new AcpError('ACP_ERR_AUTH_BAD_TOKEN', `the web session ended with its token: ${(error as Error).message}`);
      }
    }
    return session;
  }

  revoke(id: string): boolean {
    return this.sessions.delete(id);
  }

  list(): SessionView[] {
    this.sweep();
    return [...this.sessions.values()].map((session) => ({
      id: session.id.slice(0, 8),
      principal: formatPrincipal(session.principal),
      created: new Date(session.createdMs).toISOString(),
      expires: new Date(session.expiresMs).toISOString(),
    }));
  }

  /** Revokes by the short id `list` shows. */
  revokeByPrefix(prefix: string): number {
    let count = 0;
    for (const id of [...this.sessions.keys()]) {
      if (id.startsWith(prefix)) {
        this.sessions.delete(id);
        count += 1;
      }
    }
    return count;
  }

  private sweep(): void {
    const now = this.now();
    for (const [code, entry] of this.codes) if (entry.expiresMs <= now) this.codes.delete(code);
    for (const [id, session] of this.sessions) if (session.expiresMs <= now || !this.tokenLives(session)) this.sessions.delete(id);
  }

  private tokenLives(session: WebSession): boolean {
    if (session.principal.kind !== 'token') return true;
    try {
      this.checkToken(session.principal.id);
      return true;
    } catch {
      return false;
    }
  }
}
