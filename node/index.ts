/** The ACP package: the client library for scripts, the daemon, and the runtime pieces a service is built from. */
export * from '../runtime/index.js';
export { connect } from './client.js';
export { Daemon, type DaemonOptions } from './daemon.js';

import type { AgentMessage } from '../actors/agent/index.js';
import type { ApiMessage } from '../actors/api/index.js';
import type { CdbMessage } from '../actors/cdb/index.js';
import type { FrameworkMessage } from '../actors/framework/index.js';
import type { Message as AnyMessage } from '../runtime/messages.js';
export type { AgentMessage, ApiMessage, CdbMessage, FrameworkMessage };
export type { RecordView, CdbEvents, CdbSnapshot } from '../actors/cdb/index.js';

/** What each service accepts, for `client.ref<ServiceMessages['cdb']>('cdb')`; every actor also takes ping and chaos.*. */
export interface ServiceMessages {
  framework: FrameworkMessage | { type: 'ping' };
  cdb: CdbMessage | { type: 'ping' };
  agent: AgentMessage | { type: 'ping' };
  api: ApiMessage | { type: 'ping' };
  [service: string]: AnyMessage;
}
