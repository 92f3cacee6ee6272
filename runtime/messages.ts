import { z } from 'zod';

/** Every message is plain data with a `type`. */
export interface Message {
  readonly type: string;
  readonly [field: string]: unknown;
}

export const messageSchema = z.looseObject({ type: z.string().min(1).max(128) });

/**
 * What messageSchema accepts, checked by hand for the hot paths (every frame's body): an object,
 * not an array, with a `type` of 1 to 128 characters. The value is passed on as it is, not copied.
 */
export function isMessage(value: unknown): value is Message {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const type = (value as { type?: unknown }).type;
  return typeof type === 'string' && type.length >= 1 && type.length <= 128;
}

/** Messages every actor answers, whatever its service: handled by the runtime in the actor's mailbox. */
export const pingSchema = z.strictObject({ type: z.literal('ping') });
export const chaosCrashSchema = z.strictObject({ type: z.literal('chaos.crash'), reason: z.string().max(200).optional() });
export const chaosStallSchema = z.strictObject({
  type: z.literal('chaos.stall'),
  ms: z.number().int().min(1).max(600_000),
});
export const universalSchema = z.discriminatedUnion('type', [pingSchema, chaosCrashSchema, chaosStallSchema]);
export type UniversalMessage = z.infer<typeof universalSchema>;
export const UNIVERSAL_TYPES: ReadonlySet<string> = new Set(['ping', 'chaos.crash', 'chaos.stall']);

export interface Pong extends Message {
  type: 'pong';
  path: string;
  /** The node's incarnation: changes every time the daemon starts. */
  incarnation: number;
  /** How many times this actor has been started at this path on this incarnation (1 = never restarted). */
  generation: number;
}

export interface Terminated extends Message {
  type: 'terminated';
  path: string;
  reason: string;
}

export interface Ok extends Message {
  type: 'ok';
}

export const ok: Ok = { type: 'ok' };
