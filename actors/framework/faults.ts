/**
 * The faults a chaos run injects into a live node through its own daemon (`acp up --faults` only;
 * otherwise ACP_ERR_FAULTS_DISABLED), all on the Framework, admin only:
 * - `faults.kill`: the daemon dies as by `kill -9` (a helper process SIGKILLs it after the answer
 *   went out); with `restartAfterMs` the helper starts it again that long after, with the same
 *   command line (what `acp chaos run --cluster` does for a scenario's `restart`);
 * - `faults.stop`: the daemon is frozen (SIGSTOP) for `ms`, then continued (SIGCONT), by a helper;
 * - `faults.partition`: no cluster traffic in or out (agent peer links and CDB multicast) until
 *   `on: false`; connections of scripts and operators still work;
 * - `faults.drop`: the CDB sync drops this share of what it sends.
 * `framework.qemu` (read) lists the QEMU processes of this node's guests, found in /proc.
 */
import { z } from 'zod';
import type { ActorContext } from '../../runtime/actor.js';
import { replyLater, type DeferredReply } from '../../runtime/actor.js';
import type { AuthorityTable } from '../../runtime/authority.js';
import { AcpError } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import { qemuProcesses, type QemuProcess } from '../../adapters/qemu-processes.js';

const MAX_MS = 600_000;

export const faultMessages = [
  z.strictObject({ type: z.literal('faults.kill'), restartAfterMs: z.number().int().min(0).max(MAX_MS).optional() }),
  z.strictObject({ type: z.literal('faults.stop'), ms: z.number().int().min(1).max(MAX_MS) }),
  z.strictObject({ type: z.literal('faults.partition'), on: z.boolean() }),
  z.strictObject({ type: z.literal('faults.drop'), rate: z.number().min(0).max(1) }),
  z.strictObject({ type: z.literal('framework.qemu') }),
] as const;

export type FaultMessage = z.infer<(typeof faultMessages)[number]>;

export const faultAuthority: AuthorityTable = {
  'faults.kill': 'admin',
  'faults.stop': 'admin',
  'faults.partition': 'admin',
  'faults.drop': 'admin',
  'framework.qemu': 'read',
};

export interface FaultDeps {
  /** The daemon runs with --faults. */
  readonly faults: boolean;
  /** The node's home: its guests' QEMU processes are found by their run directory in it. */
  readonly home: string;
  /** Spawns the helper that SIGSTOPs this daemon now and SIGCONTs it `ms` later; its pid. */
  stopSelf(ms: number): number;
  /** Spawns the helper that SIGKILLs this daemon and maybe starts it again; its pid. */
  killSelf(restartAfterMs?: number): number;
}

export interface QemuAnswer extends Message {
  type: 'framework.qemu';
  processes: QemuProcess[];
}

export function isFaultMessage(type: string): boolean {
  return type.startsWith('faults.');
}

export function requireFaults(enabled: boolean): void {
  if (!enabled) {
    throw new AcpError('ACP_ERR_FAULTS_DISABLED', 'fault injection is disabled on this node; restart it with `acp up --faults` to allow chaos faults');
  }
}

/** Handles one of faultMessages (already parsed). */
export function handleFault(ctx: ActorContext, deps: FaultDeps, message: FaultMessage): Message | DeferredReply {
  const local = (service: string) => ctx.ref(ctx.self.path.replace(/\/framework$/, `/${service}`));
  switch (message.type) {
    case 'framework.qemu':
      return replyLater(qemuProcesses(deps.home).then((processes): QemuAnswer => ({ type: 'framework.qemu', processes })));
    case 'faults.kill': {
      requireFaults(deps.faults);
      const helper = deps.killSelf(message.restartAfterMs);
      ctx.log.warn({ helper, restartAfterMs: message.restartAfterMs ?? null }, 'fault: this daemon is being killed (SIGKILL)');
      return { type: 'faults.kill', pid: process.pid, helper, restartAfterMs: message.restartAfterMs ?? null };
    }
    case 'faults.stop': {
      requireFaults(deps.faults);
      const helper = deps.stopSelf(message.ms);
      ctx.log.warn({ helper, ms: message.ms }, 'fault: this daemon is being stopped (SIGSTOP)');
      return { type: 'faults.stop', pid: process.pid, helper, ms: message.ms };
    }
    case 'faults.partition': {
      requireFaults(deps.faults);
      const on = message.on;
      // Both halves, the agent's links and the CDB's multicast; healing restores both even if one failed.
      return replyLater(
        Promise.allSettled([local('agent').ask({ type: 'agent.partition', on }, { timeoutMs: 5000 }), local('cdb').ask({ type: 'cdb.sync.partition', on }, { timeoutMs: 5000 })]).then((results) => {
          const failed = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
          if (failed) throw AcpError.from(failed.reason, 'ACP_ERR_INTERNAL');
          return { type: 'faults.partition', on };
        }),
      );
    }
    case 'faults.drop': {
      requireFaults(deps.faults);
      return replyLater(local('cdb').ask({ type: 'cdb.sync.faults', dropRate: message.rate }, { timeoutMs: 5000 }).then(() => ({ type: 'faults.drop', rate: message.rate })));
    }
    default: {
      const unreachable: never = message;
      return unreachable;
    }
  }
}
