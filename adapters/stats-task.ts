/**
 * Stats collection, run in the piscina pool (never on the daemon's event loop): CPU and memory
 * through systeminformation, filesystems, disks and network interfaces from /proc and statfs, and
 * each guest process through /proc. Nothing here starts a process: systeminformation's fsSize,
 * disksIO and networkStats run df, lsblk and cat each call, and a second's worth of those from a
 * worker of a large daemon cost an idle node about 15 % of a core (the fork, not the command).
 * A worker thread keeps its previous samples, so per-second rates are since its last call.
 */
import { readdirSync, readFileSync, statfsSync } from 'node:fs';
import { loadavg } from 'node:os';
import si from 'systeminformation';
import { counterRate } from '../runtime/rate.js';

export interface GuestProcess {
  readonly id: string;
  readonly pid: number;
}

export interface CpuSample {
  readonly ticks: number;
  readonly at: number;
}

export interface StatsInput {
  readonly guests: readonly GuestProcess[];
  /** Each guest's CPU ticks at the previous collection, for its CPU %. */
  readonly previous: Readonly<Record<string, CpuSample>>;
}

export interface NodeStats {
  cpuPercent: number;
  load: [number, number, number];
  memory: { totalBytes: number; usedBytes: number; availableBytes: number };
  filesystems: { mount: string; sizeBytes: number; usedBytes: number }[];
  disks: { readOps: number; writeOps: number; readOpsPerSec: number | null; writeOpsPerSec: number | null } | null;
  network: { iface: string; rxBytes: number; txBytes: number; rxBytesPerSec: number | null; txBytesPerSec: number | null }[];
}

export interface GuestStats {
  cpuPercent: number | null;
  rssBytes: number;
  readBytes: number | null;
  writeBytes: number | null;
}

export interface StatsOutput {
  node: NodeStats;
  guests: Record<string, GuestStats>;
  samples: Record<string, CpuSample>;
}

const TICKS_PER_SECOND = 100;
const PAGE_BYTES = 4096;

function guest(pid: number): { ticks: number; rssBytes: number; readBytes: number | null; writeBytes: number | null } | undefined {
  try {
    // Fields after the command (which may hold spaces): state is the 3rd field, utime the 14th, stime the 15th, rss the 24th.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]);
    const rssBytes = Number(fields[21]) * PAGE_BYTES;
    let readBytes: number | null = null;
    let writeBytes: number | null = null;
    try {
      const io = readFileSync(`/proc/${pid}/io`, 'utf8');
      readBytes = Number(/read_bytes: (\d+)/.exec(io)?.[1] ?? Number.NaN);
      writeBytes = Number(/write_bytes: (\d+)/.exec(io)?.[1] ?? Number.NaN);
    } catch {
      // /proc/<pid>/io needs the same user or root: left out when not readable.
    }
    return { ticks, rssBytes, readBytes, writeBytes };
  } catch {
    return undefined;
  }
}

/** A counter's rate per second since the previous sample of the same name; null the first time or after it went backwards. */
const previousCounters = new Map<string, { value: number; at: number }>();
function perSecond(name: string, value: number, at: number): number | null {
  const before = previousCounters.get(name);
  previousCounters.set(name, { value, at });
  return before ? counterRate(value, before.value, (at - before.at) / 1000, 2) : null;
}

/** Filesystem types that need no block device (proc, tmpfs, overlay, fuse, nfs...): /proc/filesystems marks them nodev. */
function virtualFilesystemTypes(): Set<string> {
  const types = new Set<string>();
  for (const line of readFileSync('/proc/filesystems', 'utf8').split('\n')) {
    const [flag, type] = line.split('\t');
    if (flag === 'nodev' && type) types.add(type.trim());
  }
  return types;
}

/**
 * Mounted filesystems on block devices, each device once (its first mount), as df -l shows them.
 * Network and FUSE filesystems are nodev and left out, so a hung share can never block statfs.
 */
function filesystemUsage(): NodeStats['filesystems'] {
  const virtual = virtualFilesystemTypes();
  const seen = new Set<string>();
  const result: NodeStats['filesystems'] = [];
  for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
    const [device, encodedMount, type] = line.split(' ');
    if (!device || !encodedMount || !type || virtual.has(type) || type === 'squashfs' || seen.has(device)) continue;
    seen.add(device);
    // /proc/self/mounts writes spaces, tabs, newlines and backslashes in octal.
    const mount = encodedMount.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
    try {
      const fs = statfsSync(mount);
      // No blocks: a pseudo filesystem /proc/filesystems does not list (nsfs, a network namespace
      // bound at /run/netns/NAME), which df leaves out too.
      if (fs.blocks === 0) continue;
      result.push({ mount, sizeBytes: fs.blocks * fs.bsize, usedBytes: (fs.blocks - fs.bfree) * fs.bsize });
    } catch {
      // Unmounted meanwhile, or not ours to read: left out.
    }
  }
  return result;
}

/** Reads and writes completed since boot on the node's disks (/proc/diskstats), with rates; null where the kernel has none. */
function diskOps(now: number): NodeStats['disks'] {
  let readOps = 0;
  let writeOps = 0;
  let disks: Set<string>;
  try {
    // Whole disks have a device behind them; partitions, loop, ram and device-mapper volumes would count twice or are not disks.
    disks = new Set(readdirSync('/sys/block').filter((name) => {
      try {
        readdirSync(`/sys/block/${name}/device`);
        return true;
      } catch {
        return false;
      }
    }));
    for (const line of readFileSync('/proc/diskstats', 'utf8').split('\n')) {
      const fields = line.trim().split(/\s+/);
      if (fields.length < 8 || !disks.has(fields[2]!)) continue;
      readOps += Number(fields[3]);
      writeOps += Number(fields[7]);
    }
  } catch {
    return null;
  }
  return { readOps, writeOps, readOpsPerSec: perSecond('disk:read', readOps, now), writeOpsPerSec: perSecond('disk:write', writeOps, now) };
}

/** Every network interface but loopback, from /proc/net/dev (this network namespace's), with rates. */
function networkTraffic(now: number): NodeStats['network'] {
  let text: string;
  try {
    text = readFileSync('/proc/net/dev', 'utf8');
  } catch {
    return [];
  }
  const result: NodeStats['network'] = [];
  // Two header lines, then "iface: rx_bytes rx_packets ... (8 receive fields) tx_bytes ...".
  for (const line of text.split('\n').slice(2)) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const iface = line.slice(0, colon).trim();
    const fields = line.slice(colon + 1).trim().split(/\s+/);
    if (iface === 'lo' || fields.length < 16) continue;
    const rxBytes = Number(fields[0]);
    const txBytes = Number(fields[8]);
    result.push({ iface, rxBytes, txBytes, rxBytesPerSec: perSecond(`rx:${iface}`, rxBytes, now), txBytesPerSec: perSecond(`tx:${iface}`, txBytes, now) });
  }
  return result;
}

export async function collect(input: StatsInput): Promise<StatsOutput> {
  const [load, memory] = await Promise.all([si.currentLoad(), si.mem()]);
  const now = Date.now();
  const filesystems = filesystemUsage();
  const disks = diskOps(now);
  const network = networkTraffic(now);
  const guests: Record<string, GuestStats> = {};
  const samples: Record<string, CpuSample> = {};
  for (const { id, pid } of input.guests) {
    const sample = guest(pid);
    if (!sample) continue;
    const before = input.previous[id];
    const seconds = before ? (now - before.at) / 1000 : 0;
    guests[id] = {
      cpuPercent: before && seconds > 0 ? Math.round(((sample.ticks - before.ticks) / TICKS_PER_SECOND / seconds) * 1000) / 10 : null,
      rssBytes: sample.rssBytes,
      readBytes: sample.readBytes,
      writeBytes: sample.writeBytes,
    };
    samples[id] = { ticks: sample.ticks, at: now };
  }
  const [one, five, fifteen] = loadavg();
  return {
    node: {
      cpuPercent: Math.round(load.currentLoad * 10) / 10,
      load: [one!, five!, fifteen!],
      memory: { totalBytes: memory.total, usedBytes: memory.used, availableBytes: memory.available },
      filesystems,
      disks,
      network,
    },
    guests,
    samples,
  };
}
