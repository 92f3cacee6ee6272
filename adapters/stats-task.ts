/**
 * Stats collection, run in the piscina pool (never on the daemon's event loop): the node through
 * systeminformation, and each guest process through /proc. A worker thread keeps
 * systeminformation's own previous sample, so its per-second rates are since its last call.
 */
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import si from 'systeminformation';

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

export async function collect(input: StatsInput): Promise<StatsOutput> {
  const [load, memory, filesystems, network, disks] = await Promise.all([
    si.currentLoad(),
    si.mem(),
    si.fsSize().catch(() => []),
    si.networkStats('*').catch(() => []),
    si.disksIO().catch(() => null),
  ]);
  const now = Date.now();
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
      filesystems: filesystems.map((fs) => ({ mount: fs.mount, sizeBytes: fs.size, usedBytes: fs.used })),
      disks: disks ? { readOps: disks.rIO, writeOps: disks.wIO, readOpsPerSec: disks.rIO_sec, writeOpsPerSec: disks.wIO_sec } : null,
      network: network.map((nic) => ({ iface: nic.iface, rxBytes: nic.rx_bytes, txBytes: nic.tx_bytes, rxBytesPerSec: nic.rx_sec, txBytesPerSec: nic.tx_sec })),
    },
    guests,
    samples,
  };
}
