import { Counter, Gauge, Registry } from 'prom-client';
import type { GuestStats, NodeStats } from '../adapters/stats-task.js';
import type { Message } from '../runtime/messages.js';
import type { NodeStatus } from '../runtime/services.js';

/** What the metrics read at each scrape: the node's status and its CDB records. */
export interface MetricsSource {
  status(): NodeStatus;
  /** Live records under a prefix (this node's meta and stats). */
  list(prefix: string): Promise<{ key: string; value: unknown }[]>;
}

const SERVICE_STATES = ['starting', 'running', 'restarting', 'stopped', 'failed'] as const;

/**
 * Prometheus metrics (prom-client), read from the node's own status and CDB at scrape time: an
 * `acp_` prefix, base units (bytes, seconds, ratios), `_total` for counters, `_info` for metadata.
 */
export interface NodeMetrics {
  readonly contentType: string;
  /** The exposition text, read fresh. */
  text(): Promise<string>;
}

export function nodeMetrics(source: MetricsSource): NodeMetrics {
  const registry = new Registry();
  const gauge = (name: string, help: string, labelNames: readonly string[] = []) => new Gauge({ name, help, labelNames: [...labelNames], registers: [registry] });
  const counter = (name: string, help: string, labelNames: readonly string[] = []) => new Counter({ name, help, labelNames: [...labelNames], registers: [registry] });

  const info = gauge('acp_node_info', 'This node: always 1, with its identity as labels', ['cluster', 'node', 'incarnation']);
  const uptime = gauge('acp_node_uptime_seconds', 'Seconds since the daemon started');
  const serviceState = gauge('acp_service_state', 'Each service: 1 for its current state, 0 for the others', ['service', 'state']);
  const restarts = counter('acp_service_restarts_total', 'Restarts of each service since the daemon started', ['service']);
  const deadLetters = counter('acp_dead_letters_total', 'Messages to no actor (logged, and answered with an error to an ask)');
  const refused = counter('acp_refused_connections_total', 'Connections refused (bad frame, key, hello or certificate)');
  const forbidden = counter('acp_forbidden_messages_total', 'Messages refused because their sender may not send them');
  const cpu = gauge('acp_node_cpu_ratio', 'The node CPU in use, 0 to 1');
  const memory = gauge('acp_node_memory_bytes', 'Node memory', ['kind']);
  const netBytes = counter('acp_node_network_bytes_total', 'Bytes through each network interface of the node', ['interface', 'direction']);
  const systemState = gauge('acp_system_state', 'Each system on this node: 1 for its state', ['system', 'state']);
  const systemCpu = gauge('acp_system_cpu_ratio', "A system's guest CPU, 0 to 1 per host CPU", ['system']);
  const systemMemory = gauge('acp_system_memory_bytes', "A system's guest resident memory", ['system']);

  // Counters here mirror totals kept elsewhere: each scrape sets them to the current total.
  const setTotal = (metric: Counter, value: number, labels: Record<string, string> = {}) => metric.inc(labels, value);

  const refresh = async () => {
    registry.resetMetrics();
    const status = source.status();
    info.set({ cluster: status.cluster, node: status.node, incarnation: String(status.incarnation) }, 1);
    uptime.set(status.uptimeMs / 1000);
    for (const service of status.services) {
      for (const state of SERVICE_STATES) serviceState.set({ service: service.name, state }, service.state === state ? 1 : 0);
      setTotal(restarts, service.restarts, { service: service.name });
    }
    setTotal(deadLetters, status.deadLetters);
    setTotal(refused, status.refusedConnections);
    setTotal(forbidden, status.forbidden);
    const node = status.node;
    const [stats] = await source.list(`stats/node/${node}@${node}`);
    const value = stats?.value as Partial<NodeStats> | undefined;
    if (value && typeof value.cpuPercent === 'number') cpu.set(value.cpuPercent / 100);
    if (value?.memory) {
      memory.set({ kind: 'total' }, value.memory.totalBytes);
      memory.set({ kind: 'used' }, value.memory.usedBytes);
      memory.set({ kind: 'available' }, value.memory.availableBytes);
    }
    for (const iface of value?.network ?? []) {
      setTotal(netBytes, iface.rxBytes, { interface: iface.iface, direction: 'rx' });
      setTotal(netBytes, iface.txBytes, { interface: iface.iface, direction: 'tx' });
    }
    const suffix = `@${node}`;
    for (const record of await source.list('meta/system/')) {
      if (!record.key.endsWith(suffix)) continue;
      const state = (record.value as Message & { state?: unknown }).state;
      if (typeof state === 'string') systemState.set({ system: record.key.slice('meta/system/'.length, -suffix.length), state }, 1);
    }
    for (const record of await source.list('stats/system/')) {
      if (!record.key.endsWith(suffix)) continue;
      const system = record.key.slice('stats/system/'.length, -suffix.length);
      const guest = record.value as Partial<GuestStats>;
      if (typeof guest.cpuPercent === 'number') systemCpu.set({ system }, guest.cpuPercent / 100);
      if (typeof guest.rssBytes === 'number') systemMemory.set({ system }, guest.rssBytes);
    }
  };

  return {
    contentType: registry.contentType,
    async text() {
      await refresh();
      return registry.metrics();
    },
  };
}
