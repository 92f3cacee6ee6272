import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { AcpError } from './errors.js';
import type { Role } from './principal.js';

/**
 * API tokens: `acp_<id>_<secret>`, where the id names the record `object/token/<id>` in the CDB and
 * only the secret's SHA-256 is stored (the secret is 32 random bytes, so a plain digest is enough).
 */
const TOKEN_FORMAT = /^acp_([a-z0-9]{8,32})_([A-Za-z0-9_-]{43})$/;

export interface TokenRecord {
  readonly id: string;
  readonly role: Role;
  readonly hash: string;
  /** Milliseconds since the epoch, or null for no expiry. */
  readonly expiresAtMs: number | null;
}

export interface NewToken {
  readonly id: string;
  readonly secret: string;
  readonly hash: string;
}

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** A new token: a random id, and a secret that is shown once. */
export function mintApiToken(): NewToken {
  const id = randomBytes(6).toString('hex');
  const secret = `acp_${id}_${randomBytes(32).toString('base64url')}`;
  return { id, secret, hash: hashSecret(secret) };
}

/** The id in a token, or undefined if it does not have the token's shape. */
export function tokenId(secret: string): string | undefined {
  return TOKEN_FORMAT.exec(secret)?.[1];
}

/**
 * This node's view of the cluster's tokens, kept from the CDB (object/token/). A session checks
 * its token here at hello and again on every request, so a revoked or expired token stops working
 * on every node as soon as the deletion reaches it.
 */
export class TokenBook {
  private readonly tokens = new Map<string, TokenRecord>();
  private readonly lastUsed = new Map<string, number>();

  constructor(private readonly now: () => number = Date.now) {}

  set(record: TokenRecord): void {
    this.tokens.set(record.id, record);
  }

  remove(id: string): void {
    this.tokens.delete(id);
  }

  /** Replaces every record at once (a fresh snapshot). */
  reset(records: readonly TokenRecord[]): void {
    this.tokens.clear();
    for (const record of records) this.tokens.set(record.id, record);
  }

  get size(): number {
    return this.tokens.size;
  }

  /** When the token was last used on this node (ms since the epoch). */
  lastUsedAt(id: string): number | undefined {
    return this.lastUsed.get(id);
  }

  /** The token's record if the secret is right and it is valid now; else a refusal naming why. */
  verify(secret: string): TokenRecord {
    const id = tokenId(secret);
    if (!id) throw new AcpError('ACP_ERR_AUTH_BAD_TOKEN', 'the token is malformed: tokens look like acp_<id>_<secret>, as printed by acp token api create');
    const record = this.check(id);
    const given = Buffer.from(hashSecret(secret), 'hex');
    if (!timingSafeEqual(given, Buffer.from(record.hash, 'hex'))) {
      throw new AcpError('ACP_ERR_AUTH_BAD_TOKEN', `token ${id} has the wrong secret: use the token exactly as acp token api create printed it`);
    }
    this.lastUsed.set(id, this.now());
    return record;
  }

  /** The token's record if it still exists and has not expired (checked on every request), marked used. */
  check(id: string): TokenRecord {
    const record = this.alive(id);
    this.lastUsed.set(id, this.now());
    return record;
  }

  /** The token's record if it still exists and has not expired; not marked used (a sweep of web sessions asks). */
  alive(id: string): TokenRecord {
    const record = this.tokens.get(id);
    if (!record) throw new AcpError('ACP_ERR_AUTH_BAD_TOKEN', `token ${id} is unknown or was revoked; ask an admin for a new one (acp token api create)`);
    if (record.expiresAtMs !== null && record.expiresAtMs <= this.now()) {
      throw new AcpError('ACP_ERR_AUTH_BAD_TOKEN', `token ${id} expired at ${new Date(record.expiresAtMs).toISOString()}; ask an admin for a new one`);
    }
    return record;
  }
}
