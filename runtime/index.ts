/** The ACP package: the client library for scripts, and the runtime pieces a service is built from. */
export { connect, AcpClient, type ClientOptions, type ClientRef } from './client.js';
export { AcpError, errorCatalog, type ErrorCode, type ErrorKind, type ErrorData } from './errors.js';
export { parsePath, formatPath, makePath, PRIMARY, type ActorPath } from './path.js';
export type { Message, Pong, Terminated } from './messages.js';
export type { Actor, ActorContext, ActorRef, AskOptions, ServiceDefinition, Isolation } from './actor.js';
export type { NodeStatus, ServiceStatus, ServiceState } from './services.js';
export { Daemon, type DaemonOptions } from './daemon.js';

import type { AgentMessage } from '../actors/agent/index.js';
import type { ApiMessage } from '../actors/api/index.js';
import type { CdbMessage } from '../actors/cdb/index.js';
import type { FrameworkMessage } from '../actors/framework/index.js';
import type { Message as AnyMessage } from './messages.js';
export type { AgentMessage, ApiMessage, CdbMessage, FrameworkMessage };
export type { RecordView, CdbEvent, CdbSnapshot } from '../actors/cdb/index.js';

/** What each service accepts, for `client.ref<ServiceMessages['cdb']>('cdb')`; every actor also takes ping and chaos.*. */
export interface ServiceMessages {
  framework: FrameworkMessage | { type: 'ping' };
  cdb: CdbMessage | { type: 'ping' };
  agent: AgentMessage | { type: 'ping' };
  api: ApiMessage | { type: 'ping' };
  [service: string]: AnyMessage;
}
