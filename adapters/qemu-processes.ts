/**
 * The QEMU processes of one node's guests, found by scanning /proc rather than asked of the
 * hypervisor: a QEMU the daemon lost track of (its VMM died, the daemon was killed and not
 * restarted, a start whose answer never came) still counts. A process is this node's guest of
 * system X when its command line names it `-name acp-X` and its QMP socket lies in this home's
 * guest run directory (`<home>/run/vmm/X/`), as adapters/drivers/qemu-args.ts writes them: several
 * nodes on one host (the namespace harness) each see only their own.
 */
import { readdirSync, readFileSync } from 'node:fs';
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

/**
 * Every process on this host that is a QEMU guest of the node at `home`, by pid. Read synchronously:
 * procfs answers from memory, and one scan of a few hundred processes costs about a millisecond,
 * where as many promises cost eight times that (a chaos run asks every node five times a second).
 */
export async function qemuProcesses(home: string): Promise<QemuProcess[]> {
  const vmmDir = join(home, 'run', 'vmm');
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return [];
  }
  const found: QemuProcess[] = [];
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (!cmdline.includes('-name\0acp-')) continue;
    const guest = guestOf(cmdline.split('\0'), vmmDir);
    if (guest) found.push({ pid: Number(entry), ...guest });
  }
  return found.sort((a, b) => a.pid - b.pid);
}
