/** The ACP package: the client library for scripts, and the runtime pieces a service is built from. */
export { connect, AcpClient, type ClientOptions, type ClientRef } from './client.js';
export { AcpError, errorCatalog, type ErrorCode, type ErrorKind, type ErrorData } from './errors.js';
export { parsePath, formatPath, makePath, PRIMARY, type ActorPath } from './path.js';
export type { Message, Pong, Terminated } from './messages.js';
export type { Actor, ActorContext, ActorRef, AskOptions, ServiceDefinition, Isolation } from './actor.js';
export type { NodeStatus, ServiceStatus, ServiceState } from './services.js';
export { Daemon, type DaemonOptions } from './daemon.js';
