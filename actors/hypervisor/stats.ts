/**
 * Node and guest stats, collected in the worker pool (CPU, memory, I/O), with each system's NIC
 * counters from the Network service and each QEMU guest's disk counters from its VMM, written to
 * the CDB as stats/ every `statsMs`.
 */
import type { ActorContext, ActorRef } from '../../runtime/actor.js';
import { errorMessage } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import type { CpuSample, StatsOutput } from '../../adapters/stats-task.js';
import { metaKey } from '../model.js';
import type { DiskStats, SystemDisks } from './disks.js';
import type { Running } from './schema.js';
import type { GuestVmms } from './vmms.js';

/** The hypervisor's parts that stats collection reads. */
export interface StatsHost {
  readonly ctx: ActorContext;
  readonly node: string;
  readonly cdb: ActorRef;
  readonly systems: Iterable<[string, Running]>;
  readonly vmms: GuestVmms;
  readonly disks: SystemDisks;
}

export class GuestStats {
  private samples: Record<string, CpuSample> = {};
  private collecting = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly h: StatsHost) {}

  /** Collects every `statsMs` (none when 0). */
  start(statsMs: number): void {
    if (statsMs > 0) {
      this.timer = setInterval(() => void this.collect(), statsMs);
      this.timer.unref();
    }
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private async collect(): Promise<void> {
    if (this.collecting) return;
    this.collecting = true;
    const { ctx, node, cdb, systems, vmms, disks } = this.h;
    try {
      const live = [...systems].filter(([, entry]) => entry.state === 'running' || entry.state === 'paused');
      const guests = live.filter(([, entry]) => entry.meta.pid !== null).map(([systemId, entry]) => ({ id: systemId, pid: entry.meta.pid! }));
      const collected = await ctx.runTask<StatsOutput>({ module: new URL('../../adapters/stats-task.js', import.meta.url).href, name: 'collect', input: { guests, previous: this.samples } });
      this.samples = collected.samples;
      // Each system's NIC counters, as the Network service last read them (none when it cannot answer).
      const nicStats = await ctx
        .ref(ctx.self.path.replace(/\/hypervisor$/, '/network'))
        .ask<Message & { systems: Record<string, unknown[]> }>({ type: 'network.nic-stats' }, { timeoutMs: 2000 })
        .then((reply) => reply.systems, () => ({}) as Record<string, unknown[]>);
      // Each QEMU guest's disk counters (query-blockstats through its VMM), with rates.
      const blockStats: Record<string, DiskStats[]> = {};
      await Promise.all(
        live
          .filter(([, entry]) => entry.spec.driver === 'qemu' && (entry.storage?.disks?.length ?? 0) > 0)
          .map(async ([systemId]) => {
            const reply = await ctx.ref(vmms.path(systemId)).ask<Message & { disks: DiskStats[] }>({ type: 'vmm.block-stats' }, { timeoutMs: 2000 }).catch(() => undefined);
            if (reply) blockStats[systemId] = disks.rates(systemId, reply.disks, Date.now());
          }),
      );
      const nodeMeta = await cdb.ask<Message & { record: { value: { eventLoopDelayMs?: unknown } } }>({ type: 'cdb.get', key: metaKey('node', node, node) }).catch(() => undefined);
      const at = new Date().toISOString();
      const ops: { op: 'put'; key: string; value: unknown }[] = [{ op: 'put', key: `stats/node/${node}@${node}`, value: { ...collected.node, eventLoopDelayMs: nodeMeta?.record.value.eventLoopDelayMs ?? null, at } }];
      // Only those still running once the numbers are in: a stop meanwhile removed their stats.
      for (const [systemId, entry] of live.filter(([, still]) => still.state === 'running' || still.state === 'paused')) {
        const measured = collected.guests[systemId];
        // A simulated guest has no process: it reports no load rather than an invented one.
        const value = measured ?? { cpuPercent: 0, rssBytes: 0, readBytes: null, writeBytes: null, simulated: entry.spec.driver === 'sim' };
        const nics = nicStats[systemId];
        const diskStats = blockStats[systemId];
        ops.push({ op: 'put', key: `stats/system/${systemId}@${node}`, value: { ...value, ...(nics ? { nics } : {}), ...(diskStats ? { disks: diskStats } : {}), state: entry.state, at } });
      }
      for (let offset = 0; offset < ops.length; offset += 1000) await cdb.ask({ type: 'cdb.batch', ops: ops.slice(offset, offset + 1000) }, { timeoutMs: 10_000 });
    } catch (error) {
      ctx.log.debug({ err: errorMessage(error) }, 'stats collection failed; the next one retries');
    } finally {
      this.collecting = false;
    }
  }
}
