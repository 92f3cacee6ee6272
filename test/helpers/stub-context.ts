import type { ActorContext, ActorRef } from '../../runtime/actor.js';
import { silentLogger } from '../../runtime/logger.js';
import type { Message } from '../../runtime/messages.js';
import { formatPath, parsePath } from '../../runtime/path.js';

/**
 * An actor's context without a system, for running a service's actor (the CDB) in a test: it is
 * `self` on node n1 of cluster lab, its refs record what it tells in `told` and refuse asks, and
 * it has no worker pool and watches nothing.
 */
export function stubContext(self: string): { ctx: ActorContext; told: { to: string; message: Message }[] } {
  const told: { to: string; message: Message }[] = [];
  const ref = (path: string): ActorRef => ({ path, tell: (message) => told.push({ to: path, message }), ask: () => Promise.reject(new Error('the stub refs take no asks')) });
  const ctx: ActorContext = {
    path: parsePath(self),
    self: ref(self),
    node: { cluster: 'lab', node: 'n1', incarnation: 1 },
    log: silentLogger(),
    generation: 1,
    ref: (path) => ref(typeof path === 'string' ? path : formatPath(path)),
    runTask: () => Promise.reject(new Error('no pool')),
    watch: () => () => undefined,
  };
  return { ctx, told };
}
