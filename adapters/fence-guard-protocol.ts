/**
 * The fence guard's spawn channel, shared by the guard (fence-guard-spawner.ts) and the QEMU
 * driver that asks it (fence-guard-client.ts): a Unix socket `<run>/fence-guard.sock` (0600) in
 * the node's run dir, one JSON line asked and one answered per connection.
 *
 * The request names the system and QEMU's arguments only, never a program: the guard runs
 * `setpriv --pdeathsig KILL -- <QEMU_BINARY> ...argv`, so the kernel kills that QEMU the moment
 * the guard dies. The answer is QEMU's pid and the guard's, or a code from the error catalog
 * with a message.
 */
import { join } from 'node:path';
import { z } from 'zod';
import { NAME_PATTERN } from '../runtime/path.js';

/** The guard's socket in a node's run dir. */
export function fenceGuardSocket(runDir: string): string {
  return join(runDir, 'fence-guard.sock');
}

/** Where a system's QEMU keeps its files (the VMM's run dir for it): `<run>/vmm/<system>`. */
export function guardedGuestDir(runDir: string, system: string): string {
  return join(runDir, 'vmm', system);
}

/** A request is one line of at most this many bytes. */
export const SPAWN_REQUEST_MAX_BYTES = 1024 * 1024;

export const spawnRequestSchema = z.strictObject({
  type: z.literal('spawn'),
  system: z.string().regex(NAME_PATTERN, 'must be a system name: 1-63 characters of a-z, 0-9, ".", "_" or "-", starting with a letter or digit'),
  /** QEMU's arguments, after the program (which the guard fixes itself). */
  argv: z
    .array(z.string().max(8192).refine((arg) => !arg.includes('\0'), 'an argument may not hold a NUL byte'))
    .min(1)
    .max(1024),
});
export type SpawnRequest = z.infer<typeof spawnRequestSchema>;

/** The codes a guard answers a refused spawn with (each in runtime/errors.ts's catalog). */
export const SPAWN_ERROR_CODES = ['ACP_ERR_HA_GUARD_REFUSED', 'ACP_ERR_HA_SETPRIV_MISSING', 'ACP_ERR_DRIVER_MISSING', 'ACP_ERR_VMM_FAILED'] as const;
export type SpawnErrorCode = (typeof SPAWN_ERROR_CODES)[number];

export const spawnReplySchema = z.discriminatedUnion('ok', [
  z.strictObject({ ok: z.literal(true), pid: z.number().int().min(2), guard: z.number().int().min(2) }),
  z.strictObject({ ok: z.literal(false), code: z.enum(SPAWN_ERROR_CODES), error: z.string().max(4096) }),
]);
export type SpawnReply = z.infer<typeof spawnReplySchema>;
