import type { HomePaths, NodeConfig } from './config.js';
import type { Isolation } from './actor.js';
import type { Message } from './messages.js';
import type { ActorSystem } from './system.js';
import type { TokenBook } from './tokens.js';

export type ServiceState = 'starting' | 'running' | 'restarting' | 'stopped' | 'failed';

export interface ServiceStatus {
  readonly name: string;
  readonly path: string;
  readonly state: ServiceState;
  readonly restarts: number;
  readonly isolation: Isolation;
  /** The process hosting the service (the daemon's, for inline and thread). */
  readonly pid: number | undefined;
  /** The worker thread's id, for thread isolation. */
  readonly threadId?: number;
  readonly since: string;
  readonly lastError?: string;
}

export interface NodeStatus extends Message {
  readonly type: 'status';
  readonly cluster: string;
  readonly node: string;
  readonly incarnation: number;
  readonly pid: number;
  readonly startedAt: string;
  readonly uptimeMs: number;
  readonly deadLetters: number;
  /** Messages refused because their sender may not send them (ACP_ERR_AUTH_FORBIDDEN). */
  readonly forbidden: number;
  readonly refusedConnections: number;
  readonly faults: boolean;
  readonly booting: boolean;
  readonly socket: string;
  readonly services: readonly ServiceStatus[];
}

/**
 * What a service may do with the actor system beyond its own context: narrow capabilities, not the
 * system. Its node's identity and whether faults are on, paths of local services, the primary (the
 * monitor sets who it is; the HA service reads it), and children spawned and released outside the
 * service's own tree (the hypervisor's VMMs).
 */
export type ServiceSystem = Pick<ActorSystem, 'identity' | 'faultsEnabled' | 'localPath' | 'primary' | 'setPrimaryResolver' | 'spawn' | 'release'>;

/**
 * What a listener needs on top (the API's sockets, the agent and the web API): relaying a request
 * as its external principal, death watches and lifecycle events for the watches it serves, and for
 * the agent the route to other nodes and dead letters for what it cannot deliver. No other service
 * uses it (test/layers.test.ts checks).
 */
export type GatewaySystem = ServiceSystem & Pick<ActorSystem, 'ask' | 'send' | 'watch' | 'onEvent' | 'deadLetter' | 'daemonPrincipal' | 'setRemoteRouter'>;

/** What the Framework hands to the inline services it starts. */
export interface ServiceDeps {
  readonly system: ServiceSystem;
  /** Only for the API and the web API: see GatewaySystem. */
  readonly gateway: GatewaySystem;
  readonly config: NodeConfig;
  readonly paths: HomePaths;
  /** The API key (the cluster's, on a node that joined one); changes when the keys are rotated. */
  readonly apiKey: string;
  /** Writes rotated keys to the home and uses the API key from now on (acp cluster rotate-keys). */
  installKeys(keys: { apiKey: string; clusterKey: string }): void;
  /** The cluster's API tokens as this node knows them (kept from the CDB by the API service). */
  readonly tokens: TokenBook;
  readonly logLevel: string;
  /** The node's current status (as the Framework tracks it). */
  status(): NodeStatus;
  /** Asks the daemon to shut down cleanly. */
  requestShutdown(reason: string): void;
  /** Counts a refused client connection. */
  countRefusal(): void;
  /** A fact about this node that its heartbeat meta carries from now on (e.g. the hypervisor's accelerator). */
  setNodeFact(name: string, value: string | number | boolean | null): void;
}
