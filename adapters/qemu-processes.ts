/**
 * The QEMU processes of one node's guests, found by scanning /proc rather than asked of the
 * hypervisor: a QEMU the daemon lost track of (its VMM died, the daemon was killed and not
 * restarted, a start whose answer never came) still counts. A process is this node's guest of
 * system X when its command line names it `-name acp-X` and its QMP socket lies in this home's
 * guest run directory (`<home>/run/vmm/X/`), as adapters/drivers/qemu-args.ts writes them: several
 * nodes on one host (the namespace harness) each see only their own.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isValidName } from '../runtime/path.js';
import { optionValue } from './drivers/qemu-args.js';

export interface QemuProcess {
  pid: number;
  system: string;
  /** Started with `-incoming`: the target of a live migration. */
  incoming: boolean;
}

/** What a QEMU command line (argv) says: the system it runs, if it is a guest of the home whose run dir is `vmmDir`. */
export function guestOf(argv: readonly string[], vmmDir: string): { system: string; incoming: boolean } | undefined {
  const nameAt = argv.indexOf('-name');
  const name = nameAt < 0 ? undefined : argv[nameAt + 1];
  if (!name?.startsWith('acp-')) return undefined;
  const system = name.slice('acp-'.length);
  if (!isValidName(system)) return undefined;
  const qmpAt = argv.indexOf('-qmp');
  const qmp = qmpAt < 0 ? undefined : argv[qmpAt + 1];
  if (!qmp?.startsWith(`unix:${optionValue(join(vmmDir, system))}/`)) return undefined;
  return { system, incoming: argv.includes('-incoming') };
}

/** Every process on this host that is a QEMU guest of the node at `home`, by pid. */
export async function qemuProcesses(home: string): Promise<QemuProcess[]> {
  const vmmDir = join(home, 'run', 'vmm');
  let entries: string[];
  try {
    entries = await readdir('/proc');
  } catch {
    return [];
  }
  const pids = entries.filter((entry) => /^\d+$/.test(entry)).map(Number);
  const found = await Promise.all(
    pids.map(async (pid): Promise<QemuProcess | undefined> => {
      let cmdline: string;
      try {
        cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
      } catch {
        return undefined;
      }
      if (!cmdline.includes('-name\0acp-')) return undefined;
      const guest = guestOf(cmdline.split('\0'), vmmDir);
      return guest ? { pid, ...guest } : undefined;
    }),
  );
  return found.filter((process): process is QemuProcess => process !== undefined).sort((a, b) => a.pid - b.pid);
}
