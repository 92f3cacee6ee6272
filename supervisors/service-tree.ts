import type { ActorFactory, Isolation, ServiceDefinition } from '../runtime/actor.js';
import { realClock, type Clock } from '../runtime/clock.js';
import type { NodeConfig } from '../runtime/config.js';
import { AcpError, errorMessage } from '../runtime/errors.js';
import type { Logger } from '../runtime/logger.js';
import { formatPath } from '../runtime/path.js';
import { processActor } from '../runtime/process.js';
import type { ServiceDeps, ServiceState, ServiceStatus } from '../runtime/services.js';
import type { ActorSystem, LocalActor } from '../runtime/system.js';
import { threadActor } from '../runtime/thread.js';
import { Supervisor, type SupervisorEnv, type SupervisorEvent } from './supervisor.js';

export interface ServiceEntry {
  readonly name: string;
  /** URL of the compiled module exporting `service` (so a worker thread can load it too). */
  readonly module: string;
}

/** How long a service must stay running before its failed-service back-off starts over. */
const STEADY_MS = 60_000;


/** Clock, randomness and timers: real ones in acpd, simulated ones in tests. */
export type TreeClock = Clock;

interface ServiceRecord {
  readonly entry: ServiceEntry;
  readonly definition: ServiceDefinition<ServiceDeps | undefined>;
  readonly isolation: Isolation;
  readonly supervisor: Supervisor;
  state: ServiceState;
  restarts: number;
  since: string;
  lastError: string | undefined;
  threadId: number | undefined;
  /** The child process's pid, for process isolation. */
  childPid: number | undefined;
  live: LocalActor | undefined;
  cancelRetry: (() => void) | undefined;
  cancelSteady?: (() => void) | undefined;
  retryDelayMs: number;
}

export interface ServiceTreeOptions {
  system: ActorSystem;
  config: NodeConfig;
  deps: ServiceDeps;
  log: Logger;
  logFile: string | undefined;
  clock?: TreeClock;
  /** The services in boot order (the composition root's BOOT_ORDER). */
  entries: readonly ServiceEntry[];
}

/**
 * The Framework's service tree. Each service has its own one-for-one supervisor (restart intensity
 * per service, so one service's crash loop never touches another). When a service's supervisor
 * escalates, the Framework marks it `failed` and, like a crash-loop back-off, tries it again after
 * `failedRetryMs` (doubling, up to ten times that).
 */
export class ServiceTree {
  private readonly records = new Map<string, ServiceRecord>();
  private readonly clock: TreeClock;
  private readonly entries: readonly ServiceEntry[];
  private booting = false;
  private stopping = false;
  private readonly listeners = new Set<(status: ServiceStatus) => void>();

  constructor(private readonly options: ServiceTreeOptions) {
    this.clock = options.clock ?? realClock;
    this.entries = options.entries;
  }

  get isBooting(): boolean {
    return this.booting;
  }

  onChange(listener: (status: ServiceStatus) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Loads every service module and checks its configured isolation; throws a config error naming the service. */
  async load(): Promise<void> {
    for (const entry of this.entries) {
      if (this.records.has(entry.name)) continue;
      const module = (await import(entry.module)) as { service?: ServiceDefinition<ServiceDeps | undefined> };
      const definition = module.service;
      if (!definition) throw new AcpError('ACP_ERR_INTERNAL', `${entry.module} exports no service definition`);
      const configured = this.options.config.services[entry.name] ?? {};
      const isolation = configured.isolation ?? definition.isolations[0] ?? 'inline';
      if (!definition.isolations.includes(isolation)) {
        throw new AcpError(
          'ACP_ERR_ISOLATION_UNSUPPORTED',
          `service '${entry.name}' cannot run with isolation '${isolation}' (it supports: ${definition.isolations.join(', ')}); fix services.${entry.name}.isolation in the node's config.json`,
        );
      }
      const record: ServiceRecord = {
        entry,
        definition,
        isolation,
        supervisor: undefined as unknown as Supervisor,
        state: 'stopped',
        restarts: 0,
        since: new Date(this.clock.now()).toISOString(),
        lastError: undefined,
        threadId: undefined,
        childPid: undefined,
        live: undefined,
        cancelRetry: undefined,
        retryDelayMs: this.options.config.failedRetryMs,
      };
      const flags = {
        strategy: 'one-for-one',
        ...(configured.maxRestarts === undefined ? {} : { maxRestarts: configured.maxRestarts }),
        ...(configured.withinMs === undefined ? {} : { withinMs: configured.withinMs }),
      };
      const spec = { id: entry.name, restart: 'permanent', ...(configured.shutdownMs === undefined ? {} : { shutdownMs: configured.shutdownMs }) };
      (record as { supervisor: Supervisor }).supervisor = new Supervisor(this.envFor(record), flags, [spec]);
      this.records.set(entry.name, record);
    }
  }

  /** Starts every service in boot order. Services that fail are retried by their supervisors; boot goes on. */
  async boot(): Promise<void> {
    this.booting = true;
    try {
      await this.load();
      for (const entry of this.entries) {
        if (this.stopping) return;
        const record = this.records.get(entry.name)!;
        // A failed service waiting out its back-off is left to its retry timer, even when the
        // Framework itself restarts and boots again.
        if (record.cancelRetry) continue;
        await record.supervisor.startAll();
      }
    } finally {
      this.booting = false;
    }
  }

  /** Stops every service in reverse boot order. */
  async shutdown(reason = 'shutdown'): Promise<void> {
    this.stopping = true;
    for (const entry of [...this.entries].reverse()) {
      const record = this.records.get(entry.name);
      if (!record) continue;
      record.cancelRetry?.();
      record.cancelSteady?.();
      await record.supervisor.stopAll(reason);
      this.options.system.release(this.pathOf(record), reason);
    }
  }

  status(): ServiceStatus[] {
    return this.entries.flatMap((entry) => {
      const record = this.records.get(entry.name);
      return record ? [this.statusOf(record)] : [];
    });
  }

  private statusOf(record: ServiceRecord): ServiceStatus {
    const status: ServiceStatus = {
      name: record.entry.name,
      path: this.pathOf(record),
      state: record.state,
      restarts: record.restarts,
      isolation: record.isolation,
      pid: record.state !== 'running' ? undefined : record.isolation === 'process' ? record.childPid : process.pid,
      since: record.since,
      ...(record.threadId === undefined ? {} : { threadId: record.threadId }),
      ...(record.lastError === undefined ? {} : { lastError: record.lastError }),
    };
    return status;
  }

  private pathOf(record: ServiceRecord): string {
    return formatPath(this.options.system.localPath(record.entry.name));
  }

  private factoryFor(record: ServiceRecord): ActorFactory {
    if (record.isolation === 'thread') {
      return threadActor(this.options.system, {
        module: record.entry.module,
        exportName: 'service',
        logLevel: this.options.deps.logLevel,
        logFile: this.options.logFile,
        onThread: (threadId, exited) => {
          // An old worker exiting after its replacement started must not clear the new one's id.
          if (!exited) record.threadId = threadId;
          else if (record.threadId === threadId) record.threadId = undefined;
        },
      });
    }
    if (record.isolation === 'process') {
      return processActor(this.options.system, {
        module: record.entry.module,
        exportName: 'service',
        logLevel: this.options.deps.logLevel,
        logFile: this.options.logFile,
        socketDir: this.options.deps.paths.run,
        onProcess: (pid, exited) => {
          // An old child exiting after its replacement started must not clear the new one's pid.
          if (!exited) record.childPid = pid;
          else if (record.childPid === pid) record.childPid = undefined;
        },
      });
    }
    return (ctx) => record.definition.create(ctx, this.options.deps);
  }

  private envFor(record: ServiceRecord): SupervisorEnv {
    const { system } = this.options;
    const name = record.entry.name;
    return {
      ...this.clock,
      start: async () => {
        record.live = await system.spawn(system.localPath(name), this.factoryFor(record), {
          schema: record.definition.schema,
          authority: record.definition.authority,
          ...(record.definition.reads && record.isolation === 'inline' ? { reads: record.definition.reads } : {}),
          forwardsUniversal: record.isolation !== 'inline',
          onCrash: (error) => void record.supervisor.childCrashed(name, error),
        });
      },
      stop: async (_id, shutdownMs, reason) => {
        await record.live?.stop(reason, shutdownMs, true);
        record.live = undefined;
      },
      escalate: (error) => this.serviceFailed(record, error),
      record: (event) => this.recordEvent(record, event),
    };
  }

  private serviceFailed(record: ServiceRecord, error: AcpError): void {
    const name = record.entry.name;
    record.lastError = error.message;
    this.options.log.error({ service: name, code: error.code, err: error.message }, 'service failed; will retry after its back-off');
    this.options.system.release(this.pathOf(record), `failed: ${error.message}`);
    if (this.stopping) return;
    const delay = record.retryDelayMs;
    record.retryDelayMs = Math.min(delay * 2, this.options.config.failedRetryMs * 10);
    record.cancelRetry = this.clock.setTimer(delay, () => {
      record.cancelRetry = undefined;
      if (this.stopping) return;
      this.options.log.info({ service: name, afterMs: delay }, 'retrying failed service');
      record.supervisor.startAll().catch((retryError: unknown) => {
        this.options.log.error({ service: name, err: errorMessage(retryError) }, 'retry of failed service did not start');
      });
    });
  }

  private recordEvent(record: ServiceRecord, event: SupervisorEvent): void {
    const { log } = this.options;
    switch (event.type) {
      case 'state': {
        record.state = event.to;
        record.restarts = event.restarts;
        record.since = new Date(this.clock.now()).toISOString();
        // The failed-service back-off resets only once the service has stayed up for a while.
        record.cancelSteady?.();
        record.cancelSteady = undefined;
        if (event.to === 'running') {
          record.cancelSteady = this.clock.setTimer(STEADY_MS, () => {
            record.cancelSteady = undefined;
            record.retryDelayMs = this.options.config.failedRetryMs;
          });
        }
        if (event.reason?.startsWith('crashed: ')) record.lastError = event.reason.slice('crashed: '.length);
        // A first start or a clean stop is routine (debug); a restart, a failure or a crash is news.
        const routine = event.restarts === 0 && event.to !== 'failed' && !event.reason?.startsWith('crashed: ');
        log[routine ? 'debug' : 'info']({ service: record.entry.name, from: event.from, to: event.to, restarts: event.restarts, reason: event.reason }, `status change ${event.from} => ${event.to}`);
        const status = this.statusOf(record);
        for (const listener of this.listeners) listener(status);
        return;
      }
      case 'restart-scheduled':
        log.info({ service: record.entry.name, delayMs: event.delayMs, attempt: event.attempt }, 'restart scheduled');
        return;
      case 'escalate':
        log.error({ service: record.entry.name, restartsInWindow: event.restartsInWindow, reason: event.reason }, 'restart intensity exceeded');
        return;
      default: {
        const unreachable: never = event;
        return unreachable;
      }
    }
  }
}
