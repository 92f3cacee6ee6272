import { z } from 'zod';
import type { ActorRef } from '../../runtime/actor.js';
import { AcpError } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import { formatPrincipal, ROLES, type Principal } from '../../runtime/principal.js';
import { mintApiToken, type TokenBook, type TokenRecord } from '../../runtime/tokens.js';
import type { RecordView } from '../cdb/index.js';
import { objectKey, tokenObjectSchema, type TokenObject } from '../model.js';

export const TOKEN_PREFIX = 'object/token/';
const MAX_TTL_MS = 10 * 365 * 24 * 3600 * 1000;

export const tokenMessages = [
  z.strictObject({
    type: z.literal('api.token.create'),
    role: z.enum(ROLES),
    /** Absent: the token never expires. */
    ttlMs: z.number().int().min(1000).max(MAX_TTL_MS).optional(),
    comment: z.string().max(200).optional(),
  }),
  z.strictObject({ type: z.literal('api.token.list') }),
  z.strictObject({ type: z.literal('api.token.remove'), id: z.string().regex(/^[a-z0-9]{8,32}$/, 'must be a token id as listed by acp token api ls') }),
] as const;

export interface TokenView {
  id: string;
  role: TokenObject['role'];
  createdAt: string;
  expiresAt: string | null;
  comment: string | null;
  createdBy: string | null;
  /** On this node; null if never used here since the daemon started. */
  lastUsedAt: string | null;
}

function recordOf(value: TokenObject): TokenRecord {
  return { id: value.id, role: value.role, hash: value.hash, expiresAtMs: value.expiresAt === null ? null : Date.parse(value.expiresAt) };
}

/** Keeps the node's TokenBook in step with `object/token/` in the CDB (snapshot, then events). */
export function applyTokenRecords(book: TokenBook, records: readonly RecordView[]): void {
  for (const view of records) {
    const id = view.key.slice(TOKEN_PREFIX.length);
    const parsed = view.deleted ? undefined : tokenObjectSchema.safeParse(view.value);
    if (parsed?.success && parsed.data.id === id) book.set(recordOf(parsed.data));
    else book.remove(id);
  }
}

/** Creates, lists and removes API tokens: the records live in the CDB, as a hash only. */
export class TokenAdmin {
  constructor(
    private readonly cdb: ActorRef,
    private readonly book: TokenBook,
    private readonly now: () => number = Date.now,
  ) {}

  async create(role: TokenObject['role'], ttlMs: number | undefined, comment: string | undefined, by: Principal): Promise<Message> {
    const token = mintApiToken();
    const createdAt = new Date(this.now()).toISOString();
    const expiresAt = ttlMs === undefined ? null : new Date(this.now() + ttlMs).toISOString();
    const value: TokenObject = { id: token.id, role, hash: token.hash, createdAt, expiresAt, createdBy: formatPrincipal(by), ...(comment ? { comment } : {}) };
    // Must not exist yet: ids are random, but a collision must never replace another's token.
    await this.cdb.ask({ type: 'cdb.cas', key: objectKey('token', token.id), value, expect: null }, { timeoutMs: 10_000 });
    this.book.set(recordOf(value));
    return { type: 'api.token.created', id: token.id, role, secret: token.secret, createdAt, expiresAt };
  }

  async list(): Promise<Message> {
    const tokens: TokenView[] = [];
    let cursor: string | undefined;
    do {
      const page = await this.cdb.ask<Message & { records: RecordView[]; cursor?: string }>(
        { type: 'cdb.list', prefix: TOKEN_PREFIX, limit: 1000, ...(cursor ? { cursor } : {}) },
        { timeoutMs: 10_000 },
      );
      for (const view of page.records) {
        const parsed = tokenObjectSchema.safeParse(view.value);
        if (!parsed.success) continue;
        const used = this.book.lastUsedAt(parsed.data.id);
        tokens.push({
          id: parsed.data.id,
          role: parsed.data.role,
          createdAt: parsed.data.createdAt,
          expiresAt: parsed.data.expiresAt,
          comment: parsed.data.comment ?? null,
          createdBy: parsed.data.createdBy ?? null,
          lastUsedAt: used === undefined ? null : new Date(used).toISOString(),
        });
      }
      cursor = page.cursor;
    } while (cursor);
    return { type: 'api.tokens', tokens };
  }

  async remove(id: string): Promise<Message> {
    try {
      await this.cdb.ask({ type: 'cdb.delete', key: objectKey('token', id) }, { timeoutMs: 10_000 });
    } catch (error) {
      if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_NOT_FOUND') {
        throw new AcpError('ACP_ERR_CDB_NOT_FOUND', `no API token with id ${id}; acp token api ls lists them`);
      }
      throw error;
    }
    this.book.remove(id);
    return { type: 'api.token.removed', id };
  }
}
