import { isIP } from 'node:net';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { createFramework, frameworkAuthority, frameworkSchema } from '../actors/framework/index.js';
import { FaultHelper } from '../adapters/fault-helper.js';
import { hostShutdown } from '../adapters/host-shutdown.js';
import { checkWatchdogPath } from '../adapters/watchdog.js';
import { checkHomeFree, claimPidfile, ensureHome, installClusterKeys, loadOrCreateApiKey, loadOrCreateConfig, nextIncarnation, readPidfile, removeFile } from '../adapters/home.js';
import { realClock } from '../runtime/clock.js';
import { ServiceTree, type ServiceEntry } from '../supervisors/service-tree.js';
import { bootOrderFor } from './boot-order.js';
import { Supervisor } from '../supervisors/supervisor.js';
import type { NodeIdentity } from '../runtime/actor.js';
import { homePaths, type HomePaths, type NodeConfig } from '../runtime/config.js';
import { AcpError, errorMessage } from '../runtime/errors.js';
import { createLogger, type LogFormat, type Logger, type LogLevel } from '../runtime/logger.js';
import type { Message } from '../runtime/messages.js';
import { formatPath } from '../runtime/path.js';
import { TaskPool } from '../runtime/pool.js';
import type { NodeStatus, ServiceDeps, ServiceState, ServiceStatus } from '../runtime/services.js';
import { ActorSystem, type LocalActor } from '../runtime/system.js';
import { TokenBook } from '../runtime/tokens.js';

/** Over the longest drain (actors/ha/drain.ts's DRAIN_MS), so the HA service's own answer says what was left. */
const HA_DRAIN_ASK_MS = 130_000;

export interface DaemonOptions {
  home: string;
  cluster?: string;
  node?: string;
  faults?: boolean;
  logLevel?: LogLevel;
  /** Log to this file instead of standard error (a detached daemon logs to `<home>/log/acpd.log`). */
  logFile?: string;
  /** Replaces the boot order (tests). */
  services?: readonly ServiceEntry[];
  /** The fence guard keeps this hardware watchdog alive (over config.json's ha.watchdog). */
  watchdog?: string;
  /** Overrides config.json's agent address (HOST:PORT) for this run. */
  agent?: string;
  /** Also serves the API on local TCP at this port (loopback only). */
  apiPort?: number;
  apiBind?: string;
  /** The web UI's port for this run (over config.json's webapi.port); 0 picks a free one. */
  webPort?: number;
  /** Where the web UI listens for this run (over config.json's webapi.host); beyond loopback only with TLS. */
  webBind?: string;
  /** How standard-error log lines look: JSON (for machines) or pretty (for people). */
  logFormat?: LogFormat;
  /** Sync flags for this run (over config.json's `sync`): GROUP:PORT, interface address, unicast peers, L3 gateways. */
  multicast?: string;
  multicastIf?: string;
  peers?: readonly string[];
  gateways?: readonly string[];
}

const LOOPBACK = ['127.0.0.1', '::1', 'localhost'] as const;

/** Applies the run's flags over the stored config; refuses an API bind address off loopback. */
function withFlags(config: NodeConfig, options: DaemonOptions): NodeConfig {
  const watchdog = checkWatchdogPath(options.watchdog ?? config.ha.watchdog);
  const bind = options.apiBind;
  if (bind !== undefined && !(LOOPBACK as readonly string[]).includes(bind)) {
    throw new AcpError('ACP_ERR_CLI_USAGE', `the API listens on loopback only (127.0.0.1, ::1 or localhost), not '${bind}'; other nodes and remote scripts use the agent (--agent)`);
  }
  const webBind = options.webBind;
  if (webBind !== undefined && webBind !== 'localhost' && isIP(webBind) === 0) {
    throw new AcpError('ACP_ERR_CLI_USAGE', `--web-bind takes an IP address (or localhost), not '${webBind}'; beyond loopback the web UI serves TLS (webapi.tls, or the node certificate)`);
  }
  return {
    ...config,
    agent: { ...config.agent, ...(options.agent === undefined ? {} : { listen: options.agent }) },
    sync: {
      ...config.sync,
      ...(options.multicast === undefined ? {} : { multicast: options.multicast }),
      ...(options.multicastIf === undefined ? {} : { multicastIf: options.multicastIf }),
      ...(options.peers === undefined ? {} : { peers: [...options.peers] }),
      ...(options.gateways === undefined ? {} : { gateways: [...options.gateways] }),
    },
    api: {
      ...config.api,
      ...(options.apiPort === undefined ? {} : { port: options.apiPort }),
      ...(bind === undefined ? {} : { host: bind as (typeof LOOPBACK)[number] }),
    },
    webapi: {
      ...config.webapi,
      ...(options.webPort === undefined ? {} : { port: options.webPort, exactPort: true }),
      ...(options.webBind === undefined ? {} : { host: options.webBind }),
    },
    ha: { ...config.ha, ...(watchdog === undefined ? {} : { watchdog }) },
  };
}


const LOOP_DELAY_RESOLUTION_MS = 10;

/** One running acpd: the actor system, the Framework and its service tree. */
export class Daemon {
  readonly paths: HomePaths;
  readonly system: ActorSystem;
  readonly log: Logger;
  readonly config: NodeConfig;
  /** Resolves when the daemon has stopped (after `stop`, or a fatal escalation). */
  readonly stopped: Promise<{ code: number; reason: string }>;
  private readonly tree: ServiceTree;
  private readonly pool = new TaskPool();
  private readonly root: Supervisor;
  private framework: LocalActor | undefined;
  private frameworkState: ServiceState = 'stopped';
  private frameworkRestarts = 0;
  private frameworkSince = new Date().toISOString();
  private readonly startedAt = Date.now();
  private readonly loopDelay = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION_MS });
  private refusedConnections = 0;
  /** The cluster's API tokens as this node knows them: shared by the API and the agent. */
  private readonly tokens = new TokenBook();
  private readonly nodeFacts: Record<string, string | number | boolean | null> = {};
  private stopping: Promise<void> | undefined;
  private resolveStopped!: (result: { code: number; reason: string }) => void;

  private constructor(paths: HomePaths, config: NodeConfig, apiKey: string, log: Logger, options: DaemonOptions) {
    this.paths = paths;
    this.config = config;
    this.log = log;
    this.stopped = new Promise((resolve) => {
      this.resolveStopped = resolve;
    });
    const identity: NodeIdentity = { cluster: config.cluster, node: config.node, incarnation: nextIncarnation(paths) };
    this.system = new ActorSystem({ identity, log, faults: options.faults ?? false, pool: this.pool });
    let currentApiKey = apiKey;
    const deps: ServiceDeps = {
      system: this.system,
      gateway: this.system,
      config,
      paths,
      get apiKey() {
        return currentApiKey;
      },
      installKeys: (keys) => {
        installClusterKeys(paths, keys);
        currentApiKey = keys.apiKey;
      },
      tokens: this.tokens,
      logLevel: options.logLevel ?? config.logLevel,
      status: () => this.status(),
      requestShutdown: (reason) => void this.stop(reason),
      countRefusal: () => {
        this.refusedConnections += 1;
      },
      setNodeFact: (name, value) => {
        this.nodeFacts[name] = value;
      },
    };
    this.tree = new ServiceTree({ system: this.system, config, deps, log, logFile: options.logFile, entries: options.services ?? bootOrderFor(config) });
    const frameworkPath = this.system.localPath('framework');
    // A restarted daemon's output goes where this one's does: its log file, or the home's.
    const faultHelper = new FaultHelper({ helperLog: join(paths.log, 'fault-helper.log'), daemonLog: options.logFile ?? paths.logFile });
    // The Framework's own actor is restarted like any service; if it cannot stay up, the node stops.
    this.root = new Supervisor(
      {
        ...realClock,
        start: async () => {
          this.framework = await this.system.spawn(
            frameworkPath,
            (ctx) =>
              createFramework(ctx, {
                boot: () => this.tree.boot(),
                status: () => this.status(),
                requestShutdown: deps.requestShutdown,
                eventLoopDelay: () => this.eventLoopDelay(),
                nodeFacts: () => ({ ...this.nodeFacts }),
                onServiceChange: (listener) => this.tree.onChange(listener),
                heartbeatMs: config.heartbeatMs,
                ...(config.witness === true ? { witness: true } : {}),
                ...(config.agent.listen ? { agentAddress: config.agent.listen } : {}),
                faults: {
                  faults: this.system.faultsEnabled,
                  home: paths.home,
                  stopSelf: (ms) => faultHelper.stopSelf(ms),
                  killSelf: (restartAfterMs) => faultHelper.killSelf(restartAfterMs),
                },
              }),
            { schema: frameworkSchema, authority: frameworkAuthority, onCrash: (error) => void this.root.childCrashed('framework', error) },
          );
        },
        stop: async (_id, shutdownMs, reason) => {
          await this.framework?.stop(reason, shutdownMs, true);
        },
        escalate: (error) => {
          log.fatal({ code: error.code, err: error.message }, 'the framework cannot stay up; stopping the node');
          void this.stop(`fatal: ${error.message}`, 1);
        },
        record: (event) => {
          if (event.type !== 'state') return;
          this.frameworkState = event.to;
          this.frameworkRestarts = event.restarts;
          this.frameworkSince = new Date().toISOString();
        },
      },
      {},
      [{ id: 'framework', restart: 'permanent' }],
    );
  }

  static async start(options: DaemonOptions): Promise<Daemon> {
    const paths = homePaths(options.home);
    ensureHome(paths);
    checkHomeFree(paths);
    const config = withFlags(loadOrCreateConfig(paths, { cluster: options.cluster, node: options.node }).config, options);
    const apiKey = loadOrCreateApiKey(paths);
    const log = createLogger({ level: options.logLevel ?? config.logLevel, file: options.logFile, format: options.logFormat ?? 'json', base: { pid: process.pid, node: config.node } });
    if (!claimPidfile(paths.pidfile, process.pid)) {
      throw new AcpError('ACP_ERR_DAEMON_RUNNING', `another acpd is starting on ${paths.home}; stop it with 'acp down --home ${paths.home}'`);
    }
    const daemon = new Daemon(paths, config, apiKey, log, options);
    daemon.loopDelay.enable();
    try {
      await daemon.tree.load();
      await daemon.root.startAll();
    } catch (error) {
      await daemon.stop(`start failed: ${errorMessage(error)}`, 1);
      throw AcpError.from(error, 'ACP_ERR_DAEMON_START_FAILED');
    }
    log.info({ cluster: config.cluster, node: config.node, incarnation: daemon.system.identity.incarnation, socket: paths.socket, faults: daemon.system.faultsEnabled }, 'acpd started');
    return daemon;
  }

  /** Asks the HA service to drain this node (while every service still runs); logs what it did. */
  private async drainHa(): Promise<void> {
    if (!this.tree.status().some((service) => service.name === 'ha' && service.state === 'running')) return;
    try {
      const host = await hostShutdown();
      const reply = await this.system.ref(this.system.localPath('ha')).ask<Message & { why?: string; left?: string[] }>({ type: 'ha.drain', host }, { timeoutMs: HA_DRAIN_ASK_MS });
      this.log.info({ host, ...reply }, `HA drain: ${reply.why ?? 'done'}`);
    } catch (error) {
      this.log.warn({ err: errorMessage(error) }, 'the HA drain did not finish; stopping anyway (the fence guard ends HA guests left here)');
    }
  }

  /** The event loop's delay since the last call (percentiles in milliseconds). */
  eventLoopDelay(): { p50: number; p99: number; max: number } {
    // The histogram's samples include its own 10 ms sampling interval: what is left is the delay.
    const toMs = (nanoseconds: number) => Math.max(0, Math.round((nanoseconds / 1e6 - LOOP_DELAY_RESOLUTION_MS) * 100) / 100);
    const delay = { p50: toMs(this.loopDelay.percentile(50)), p99: toMs(this.loopDelay.percentile(99)), max: toMs(this.loopDelay.max) };
    this.loopDelay.reset();
    return delay;
  }

  status(): NodeStatus {
    const identity = this.system.identity;
    const framework: ServiceStatus = {
      name: 'framework',
      path: formatPath(this.system.localPath('framework')),
      state: this.frameworkState,
      restarts: this.frameworkRestarts,
      isolation: 'inline',
      pid: process.pid,
      since: this.frameworkSince,
    };
    return {
      type: 'status',
      cluster: identity.cluster,
      node: identity.node,
      incarnation: identity.incarnation,
      pid: process.pid,
      startedAt: new Date(this.startedAt).toISOString(),
      uptimeMs: Date.now() - this.startedAt,
      deadLetters: this.system.deadLetters,
      forbidden: this.system.forbidden,
      refusedConnections: this.refusedConnections,
      faults: this.system.faultsEnabled,
      booting: this.tree.isBooting,
      socket: this.paths.socket,
      services: [framework, ...this.tree.status()],
    };
  }

  /**
   * Stops the services in reverse boot order, then the Framework, and removes the pidfile. A clean
   * stop (code 0) first drains the node's HA systems by its shutdown policy (actors/ha/drain.ts).
   */
  stop(reason = 'shutdown', code = 0): Promise<void> {
    this.stopping ??= (async () => {
      this.log.info({ reason }, 'acpd stopping');
      if (code === 0) await this.drainHa();
      this.system.windingDown();
      try {
        await this.tree.shutdown(reason);
        await this.root.stopAll(reason);
        await this.system.shutdown(reason);
        await this.pool.close();
        this.loopDelay.disable();
      } catch (error) {
        this.log.error({ err: errorMessage(error) }, 'error while stopping');
      }
      removeFile(this.paths.socket);
      if (readPidfile(this.paths.pidfile) === process.pid) removeFile(this.paths.pidfile);
      this.log.info({ reason }, 'acpd stopped');
      this.log.flush();
      this.resolveStopped({ code, reason });
    })();
    return this.stopping;
  }
}
