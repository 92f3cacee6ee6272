import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import type { PoolTask } from './actor.js';

/**
 * The shared pool of worker threads for CPU-heavy work (stats collection, hashing, ...), so that it
 * never runs on the daemon's event loop. Threads start on first use and exit when idle.
 */
export class TaskPool {
  private pool: Piscina | undefined;

  constructor(private readonly maxThreads = Math.max(1, Math.min(4, availableParallelism()))) {}

  run<Result>(task: PoolTask): Promise<Result> {
    this.pool ??= new Piscina({ minThreads: 0, maxThreads: this.maxThreads, idleTimeout: 30_000 });
    const filename = task.module.startsWith('file:') ? fileURLToPath(task.module) : task.module;
    return this.pool.run(task.input, { filename, name: task.name }) as Promise<Result>;
  }

  get threads(): number {
    return this.pool?.threads.length ?? 0;
  }

  async close(): Promise<void> {
    const pool = this.pool;
    this.pool = undefined;
    await pool?.destroy();
  }
}
