/**
 * How the Storage service's adapters run a program: execFile (never a shell) with an argv array,
 * a timeout and a bounded output, by the exec helper (adapters/exec.ts). A missing program, a failure or a timeout is
 * an AcpError naming the command (and, for a missing program, the Debian package that has it).
 */
import { z } from 'zod';
import { AcpError } from '../../runtime/errors.js';
import { execProgram } from '../exec.js';

const MAX_BUFFER = 64 * 1024 * 1024;

/** Where each program comes from, for the message when it is missing. */
const PACKAGES: Readonly<Record<string, string>> = {
  'qemu-img': 'qemu-utils',
  lsblk: 'util-linux',
  btrfs: 'btrfs-progs',
  'mkfs.btrfs': 'btrfs-progs',
  sshfs: 'sshfs',
  fusermount: 'fuse3',
  fusermount3: 'fuse3',
  mount: 'mount',
  umount: 'mount',
  'mount.nfs': 'nfs-common',
  'mount.cifs': 'cifs-utils',
  losetup: 'mount',
};

export interface RunOptions {
  readonly timeoutMs: number;
  /** Extra environment (never the caller's input: fixed names and values). */
  readonly env?: Readonly<Record<string, string>>;
}

/** Runs `tool ...args` (through the exec helper: adapters/exec.ts); resolves with stdout. */
export async function runTool(tool: string, args: readonly string[], options: RunOptions): Promise<string> {
  const command = `${tool} ${args.join(' ')}`;
  const result = await execProgram(tool, args, { timeoutMs: options.timeoutMs, killSignal: 'SIGKILL', maxBuffer: MAX_BUFFER, ...(options.env ? { env: options.env } : {}) });
  switch (result.outcome) {
    case 'ok':
      return result.stdout;
    case 'missing': {
      const pkg = PACKAGES[tool];
      throw new AcpError('ACP_ERR_STORAGE_TOOL_MISSING', `'${tool}' is not installed or not on PATH (needed for: ${command})${pkg ? `; install ${pkg} (apt-get install ${pkg})` : ''}`, { command });
    }
    case 'timeout':
      throw new AcpError('ACP_ERR_STORAGE_COMMAND', `${command} did not finish within ${options.timeoutMs} ms`, { command });
    default: {
      const stderr = result.stderr.trim();
      throw new AcpError('ACP_ERR_STORAGE_COMMAND', `${command} failed: ${stderr.split('\n').slice(-3).join(' ') || result.message}`, { command, stderr: stderr.slice(-2000) });
    }
  }
}

/** Parses a command's JSON output against its expected shape; the error names the command. */
export function parseOutput<T>(command: string, text: string, schema: z.ZodType<T>): T {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    throw new AcpError('ACP_ERR_STORAGE_BAD_OUTPUT', `${command} printed output that is not JSON (${(error as Error).message}): ${text.slice(0, 80)}`, { command });
  }
  const result = schema.safeParse(data);
  if (!result.success) {
    const issue = result.error.issues[0];
    throw new AcpError('ACP_ERR_STORAGE_BAD_OUTPUT', `${command} printed JSON of an unexpected shape: ${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`, { command });
  }
  return result.data;
}
