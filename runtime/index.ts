/** The actor runtime's public pieces: the client, errors, paths and the types a service is built from. */
export { AcpClient, type ClientOptions, type ClientRef } from './client.js';
export { AcpError, errorCatalog, type ErrorCode, type ErrorKind, type ErrorData } from './errors.js';
export { parsePath, formatPath, makePath, PRIMARY, type ActorPath } from './path.js';
export type { Message, Pong, Terminated } from './messages.js';
export type { Actor, ActorContext, ActorRef, AskOptions, ServiceDefinition, Isolation } from './actor.js';
export type { NodeStatus, ServiceStatus, ServiceState } from './services.js';
