/**
 * Join tokens and the one-time ledger that redeems them: a token names the cluster and its CA's
 * fingerprint (so the joining node authenticates the server it joins through) and carries a secret
 * the CA node keeps only as a SHA-256, redeemed once before it expires.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { AcpError, errorMessage } from '../runtime/errors.js';
import { assertName, isValidName } from '../runtime/path.js';
import { writeSecret } from './pki.js';

const DAY_MS = 24 * 60 * 60 * 1000;

export interface JoinToken {
  cluster: string;
  /** fingerprint() of the cluster CA, so the joining node can authenticate the server it joins through. */
  caFingerprint: string;
  id: string;
  secret: string;
  /** Epoch milliseconds. */
  expiresAt: number;
}

const TOKEN_PREFIX = 'acpjoin1.';
const TOKEN_FIELDS = {
  cluster: (value: unknown) => typeof value === 'string' && isValidName(value),
  caFingerprint: (value: unknown) => typeof value === 'string' && /^[0-9a-f]{64}$/.test(value),
  id: (value: unknown) => typeof value === 'string' && /^[0-9a-f]{32}$/.test(value),
  secret: (value: unknown) => typeof value === 'string' && /^[A-Za-z0-9_-]{43}$/.test(value),
  expiresAt: (value: unknown) => Number.isSafeInteger(value),
} as const;

export function mintToken(cluster: string, caFingerprint: string, ttlMs: number, now = Date.now()): JoinToken {
  assertName(cluster, 'cluster');
  return {
    cluster,
    caFingerprint,
    id: randomBytes(16).toString('hex'),
    secret: randomBytes(32).toString('base64url'),
    expiresAt: now + ttlMs,
  };
}

export function encodeToken(token: JoinToken): string {
  return TOKEN_PREFIX + Buffer.from(JSON.stringify(token)).toString('base64url');
}

export function decodeToken(text: string): JoinToken {
  const trimmed = text.trim();
  const body = trimmed.startsWith(TOKEN_PREFIX) ? trimmed.slice(TOKEN_PREFIX.length) : undefined;
  if (body === undefined || !/^[A-Za-z0-9_-]+$/.test(body)) throw badToken(`it does not start with '${TOKEN_PREFIX}' followed by base64url`);
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
  } catch {
    throw badToken('its payload is not JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw badToken('its payload is not an object');
  const record = value as Record<string, unknown>;
  for (const [field, valid] of Object.entries(TOKEN_FIELDS)) {
    if (!valid(record[field])) throw badToken(`its field '${field}' is missing or malformed`);
  }
  return {
    cluster: record['cluster'] as string,
    caFingerprint: record['caFingerprint'] as string,
    id: record['id'] as string,
    secret: record['secret'] as string,
    expiresAt: record['expiresAt'] as number,
  };
}

function badToken(why: string): AcpError {
  return new AcpError('ACP_ERR_PKI_BAD_TOKEN', `the join token is invalid: ${why}; copy the whole token printed by 'acp token create' again`);
}

// ---- one-time token ledger ----

interface LedgerEntry {
  /** SHA-256 of the secret, hex: the ledger never holds a usable secret. */
  secretSha256: string;
  expiresAt: number;
  usedAt: number | null;
}

/**
 * Join tokens the cluster minted, so each can be redeemed once. Every call reads and rewrites the
 * file, so two ledgers on one file agree; it is not meant for concurrent writers in several processes.
 */
export class TokenLedger {
  constructor(private readonly file: string) {}

  add(token: JoinToken): void {
    const entries = this.load();
    if (entries.has(token.id)) throw new AcpError('ACP_ERR_PKI_BAD_TOKEN', `join token ${token.id} is already in the ledger; mint a new token`);
    entries.set(token.id, { secretSha256: sha256Hex(token.secret), expiresAt: token.expiresAt, usedAt: null });
    this.save(entries, Date.now());
  }

  /** Marks the token used, or throws why it cannot be. The secret is checked first, so a guesser learns nothing. */
  consume(id: string, secret: string, now = Date.now()): void {
    const entries = this.load();
    const entry = this.valid(entries, id, secret, now);
    entries.set(id, { ...entry, usedAt: now });
    this.save(entries, now);
  }

  /** Throws as `consume` would, but uses nothing up: a join checks its token before any other work. */
  check(id: string, secret: string, now = Date.now()): void {
    this.valid(this.load(), id, secret, now);
  }

  private valid(entries: Map<string, LedgerEntry>, id: string, secret: string, now: number): LedgerEntry {
    const entry = entries.get(id);
    if (!entry || !secretMatches(entry.secretSha256, secret)) {
      throw new AcpError('ACP_ERR_PKI_BAD_TOKEN', 'the join token is unknown to this cluster or its secret is wrong; ask an operator for a new token');
    }
    if (entry.usedAt !== null) throw new AcpError('ACP_ERR_PKI_TOKEN_USED', 'the join token was already used; tokens work once, ask an operator for a new one');
    if (now >= entry.expiresAt) throw new AcpError('ACP_ERR_PKI_TOKEN_EXPIRED', 'the join token expired; ask an operator for a new one');
    return entry;
  }

  private load(): Map<string, LedgerEntry> {
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
      throw new AcpError('ACP_ERR_PKI_LEDGER', `cannot read the join-token ledger ${this.file}: ${errorMessage(error)}`);
    }
    return parseLedger(text, this.file);
  }

  private save(entries: Map<string, LedgerEntry>, now: number): void {
    // Expired entries stay a day so a late attempt still hears "expired" rather than "unknown".
    const kept = [...entries].filter(([, entry]) => entry.expiresAt > now - DAY_MS);
    writeSecret(this.file, `${JSON.stringify({ version: 1, tokens: Object.fromEntries(kept) }, null, 2)}\n`);
  }
}

function parseLedger(text: string, file: string): Map<string, LedgerEntry> {
  const corrupt = () =>
    new AcpError('ACP_ERR_PKI_LEDGER', `the join-token ledger ${file} is corrupt; remove it (outstanding join tokens stop working) and mint new ones`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw corrupt();
  }
  const tokens = (value as { tokens?: unknown } | null)?.tokens;
  if (typeof tokens !== 'object' || tokens === null) throw corrupt();
  const entries = new Map<string, LedgerEntry>();
  for (const [id, entry] of Object.entries(tokens)) {
    if (!isLedgerEntry(entry)) throw corrupt();
    entries.set(id, entry);
  }
  return entries;
}

function isLedgerEntry(value: unknown): value is LedgerEntry {
  if (typeof value !== 'object' || value === null) return false;
  const entry = value as Record<string, unknown>;
  return (
    typeof entry['secretSha256'] === 'string' &&
    /^[0-9a-f]{64}$/.test(entry['secretSha256']) &&
    Number.isSafeInteger(entry['expiresAt']) &&
    (entry['usedAt'] === null || Number.isSafeInteger(entry['usedAt']))
  );
}

function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

function secretMatches(storedSha256: string, secret: string): boolean {
  return timingSafeEqual(Buffer.from(storedSha256, 'hex'), createHash('sha256').update(secret).digest());
}

