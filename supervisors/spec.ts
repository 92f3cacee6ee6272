import { z } from 'zod';
import { AcpError } from '../runtime/errors.js';

/** Supervision as plain data, validated once at the boundary (OTP's sup_flags and child specs). */
export const STRATEGIES = ['one-for-one', 'one-for-all', 'rest-for-one'] as const;
export type Strategy = (typeof STRATEGIES)[number];

export const RESTART_POLICIES = ['permanent', 'transient', 'temporary'] as const;
export type RestartPolicy = (typeof RESTART_POLICIES)[number];

export const backoffSchema = z.strictObject({
  initialMs: z.number().int().min(0).max(600_000).default(50),
  maxMs: z.number().int().min(0).max(3_600_000).default(5000),
  factor: z.number().min(1).max(10).default(2),
  /** Fraction of the delay added or removed at random, so restarts of many nodes do not align. */
  jitter: z.number().min(0).max(1).default(0.2),
});
export type Backoff = z.infer<typeof backoffSchema>;

export const supervisorFlagsSchema = z.strictObject({
  strategy: z.enum(STRATEGIES).default('one-for-one'),
  maxRestarts: z.number().int().min(0).max(1000).default(3),
  withinMs: z.number().int().min(1).max(86_400_000).default(5000),
  backoff: backoffSchema.default({ initialMs: 50, maxMs: 5000, factor: 2, jitter: 0.2 }),
});
export type SupervisorFlags = z.infer<typeof supervisorFlagsSchema>;

export const childSpecSchema = z.strictObject({
  id: z.string().min(1).max(128),
  restart: z.enum(RESTART_POLICIES).default('permanent'),
  shutdownMs: z.number().int().min(0).max(600_000).default(5000),
});
export type ChildSpec = z.infer<typeof childSpecSchema>;

export function parseFlags(input: unknown): SupervisorFlags {
  return parseOrThrow(supervisorFlagsSchema, input ?? {}, 'supervisor flags');
}

export function parseChildSpec(input: unknown): ChildSpec {
  return parseOrThrow(childSpecSchema, input, 'child spec');
}

function parseOrThrow<T>(schema: z.ZodType<T>, input: unknown, what: string): T {
  const result = schema.safeParse(input);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const where = issue && issue.path.length > 0 ? `field '${issue.path.join('.')}'` : what;
  throw new AcpError('ACP_ERR_SUPERVISOR_SPEC', `invalid ${what}: ${where}: ${issue?.message ?? 'invalid'}`);
}
