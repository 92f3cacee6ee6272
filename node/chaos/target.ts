import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { qemuProcesses, type QemuProcess } from '../../adapters/qemu-processes.js';
import type { Message } from '../../runtime/messages.js';
import { killHomeGuests } from '../../adapters/drivers/qemu.js';
import type { Harness } from '../harness/index.js';
import type { ScenarioSystem } from './scenario.js';

/**
 * What a chaos run needs of a cluster: its nodes, a connection to each, and the faults. Two kinds:
 * the harness (fresh nodes in network namespaces, faults done from outside: signals and links,
 * `--harness N`) and a live cluster (faults asked of each node's own daemon, `--cluster`,
 * node/chaos/live.ts). A unit test gives a fake.
 */
export interface ChaosAsker {
  ask<Reply extends Message = Message>(to: string, message: Message, options?: { timeoutMs?: number }): Promise<Reply>;
}

export type ChaosSystemSpec = ScenarioSystem;

export interface ChaosCluster {
  readonly mode: 'harness' | 'cluster';
  readonly names: readonly string[];
  /** A connection to the node; rejects when it cannot be reached. */
  client(name: string): Promise<ChaosAsker>;
  createSystem(system: ChaosSystemSpec): Promise<void>;
  /**
   * Kills the node's daemon as `kill -9` does, resolving once it is gone. `restartAfterMs`: the
   * scenario restarts it later, that long after the kill (a live node's helper needs to know now;
   * the harness restarts it when the `restart` step comes).
   */
  kill(name: string, restartAfterMs: number | undefined): Promise<void>;
  /** Brings a killed node back; resolves once it answers. */
  restart(name: string): Promise<void>;
  /** Freezes the node's daemon for `ms`; resolves once it is continued. */
  stop(name: string, ms: number): Promise<void>;
  partition(name: string): Promise<void>;
  heal(name: string): Promise<void>;
  dropRate(name: string, rate: number): Promise<void>;
  /** The node's QEMU guests seen from this host, for a node that cannot be asked (the harness: same host). */
  localQemu?(name: string): Promise<QemuProcess[]>;
  /** Undoes what the run left (live: heal, drop 0%, its systems and writes removed). */
  cleanup?(systems: readonly string[], prefix: string, log: (line: string) => void): Promise<void>;
}

/** The fence guard's pid, from its log: the harness's kill is a node's power loss, guard and all. */
function guardPid(home: string): number | undefined {
  try {
    const lines = readFileSync(join(home, 'log', 'fence-guard.log'), 'utf8').trim().split('\n');
    const started = lines.map((line) => JSON.parse(line) as { event?: string; pid?: number }).filter((entry) => entry.event === 'started');
    return started.at(-1)?.pid;
  } catch {
    return undefined;
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function qemuFlags(system: ScenarioSystem): string[] {
  if (system.driver !== 'qemu') return [];
  const flags: [string, string | number | undefined][] = [['--kernel', system.kernel], ['--initrd', system.initrd], ['--cmdline', system.cmdline], ['--memory', system.memoryMiB ?? 128]];
  return flags.flatMap(([flag, value]) => (value === undefined ? [] : [flag, String(value)]));
}

/** The system object a scenario system makes (what `acp system create` writes for the same flags). */
export function systemObject(system: ScenarioSystem): Record<string, unknown> {
  const boot = system.kernel === undefined ? undefined : { kernel: system.kernel, ...(system.initrd ? { initrd: system.initrd } : {}), ...(system.cmdline ? { cmdline: system.cmdline } : {}) };
  return {
    name: system.id,
    driver: system.driver,
    ha: system.ha,
    ...(system.node ? { node: system.node } : {}),
    ...(system.driver === 'qemu' ? { memoryMiB: system.memoryMiB ?? 128 } : {}),
    ...(boot ? { boot } : {}),
  };
}

/**
 * The harness as a chaos cluster: faults from outside. Its kill is a node's power loss: the
 * daemon, its fence guard and its guests' QEMU processes, all SIGKILLed.
 */
export function harnessCluster(harness: Harness): ChaosCluster {
  return {
    mode: 'harness',
    names: harness.nodes.map((node) => node.name),
    client: (name) => harness.client(name),
    async createSystem(system) {
      const args = ['system', 'create', system.id, '--driver', system.driver, ...(system.ha ? ['--ha'] : []), ...(system.node ? ['--node', system.node] : []), ...qemuFlags(system)];
      const created = await harness.cli(harness.nodes[0]!.name, args);
      if (created.code !== 0) throw new Error(`acp ${args.join(' ')} exited ${created.code}: ${created.stderr.trim()}`);
    },
    async kill(name) {
      const { home } = harness.node(name);
      const guard = guardPid(home);
      await harness.kill(name);
      if (guard !== undefined) {
        try {
          process.kill(guard, 'SIGKILL');
        } catch {
          // Already gone with its daemon.
        }
      }
      killHomeGuests(home);
    },
    restart: (name) => harness.restart(name),
    async stop(name, ms) {
      harness.stop(name);
      try {
        await sleep(ms);
      } finally {
        harness.cont(name);
      }
    },
    partition: (name) => harness.partition(name),
    heal: (name) => harness.heal(name),
    dropRate: (name, rate) => harness.dropRate(name, rate),
    localQemu: (name) => qemuProcesses(harness.node(name).home),
  };
}
