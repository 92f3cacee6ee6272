/**
 * How the hypervisor keeps its one rule: a system's entry changes only in `receive`. I/O (a VMM's
 * answer, a CDB read, the Network or Storage service) runs outside the mailbox, one operation of a
 * system after the other, and its result comes back as a message to self,
 * `{ type: 'hypervisor.<op>-done', id, epoch, token }`. `receive` hands that message to `settle`,
 * which runs the operation's continuation there, telling it whether the entry is still at the epoch
 * the I/O began in (`fresh`) or has moved since (a stop, a crash, a newer start): a stale result is
 * recognised, never applied as if nothing had happened.
 */
import { DeferredReply, type ActorRef } from '../../runtime/actor.js';
import type { Message } from '../../runtime/messages.js';

/** The kinds of I/O the hypervisor runs; each reports back as `hypervisor.<op>-done`. */
export const IO_OPS = ['prepare', 'launch', 'stop', 'command', 'cleanup', 'readopt', 'migrate', 'arrival', 'recover'] as const;
export type IoOp = (typeof IO_OPS)[number];

export type Settled<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** Who waits for an operation: told inside `receive` when the operation ends. */
export interface Reply {
  ok(message: Message): void;
  fail(error: unknown): void;
}

/** A reply for an asker: `receive` returns `reply` now, and the asker gets its answer when `ok` or `fail` is called. */
export function deferred(): Reply & { reply: DeferredReply; promise: Promise<Message> } {
  let ok: (message: Message) => void = () => undefined;
  let fail: (error: unknown) => void = () => undefined;
  const promise = new Promise<Message>((resolve, reject) => {
    ok = resolve;
    fail = reject;
  });
  // An operation nobody awaits any more must not be an unhandled rejection.
  promise.catch(() => undefined);
  return { ok, fail, promise, reply: new DeferredReply(promise) };
}

/** Nobody waits (a restart by policy, a fence, a deleted object): a failure goes to `onFail`, if given. */
export function noReply(onFail: (error: unknown) => void = () => undefined): Reply {
  return { ok: () => undefined, fail: onFail };
}

/**
 * Tokens are unique in the process, not per hypervisor: a report from the I/O of a hypervisor that
 * crashed, reaching the one its supervisor started in its place, matches nothing there.
 */
let tokens = 0;

export class GuestIo {
  private readonly chains = new Map<string, Promise<void>>();
  private readonly waiting = new Map<number, (fresh: boolean) => void>();

  constructor(
    private readonly self: ActorRef,
    private readonly epochOf: (id: string) => number | undefined,
  ) {}

  /**
   * Runs `task` after the system's earlier I/O has settled (so a stop's I/O finds the VMM a start's
   * I/O spawned), then reports back; `done` runs inside `receive` when the report is handled.
   */
  run<T>(op: IoOp, id: string, task: () => Promise<T>, done: (result: Settled<T>, fresh: boolean) => void): void {
    const token = ++tokens;
    const epoch = this.epochOf(id) ?? -1;
    const before = this.chains.get(id) ?? Promise.resolve();
    const ran = before.then(task).then(
      (value): Settled<T> => ({ ok: true, value }),
      (error: unknown): Settled<T> => ({ ok: false, error }),
    );
    const tail = ran.then(() => undefined);
    this.chains.set(id, tail);
    void ran.then((result) => {
      if (this.chains.get(id) === tail) this.chains.delete(id);
      this.waiting.set(token, (fresh) => done(result, fresh));
      this.self.tell({ type: `hypervisor.${op}-done`, id, epoch, token });
    });
  }

  /** In `receive`: the continuation of a `hypervisor.<op>-done` message, told whether its epoch is still the entry's. */
  settle(message: { id: string; epoch: number; token: number }): void {
    const continuation = this.waiting.get(message.token);
    if (!continuation) return;
    this.waiting.delete(message.token);
    continuation(this.epochOf(message.id) === message.epoch);
  }

  /** Whether the system has I/O under way (its result not yet back as a message). */
  busy(id: string): boolean {
    return this.chains.has(id);
  }

  /** Resolves once every system's I/O started so far has settled. */
  async idle(): Promise<void> {
    await Promise.all([...this.chains.values()]);
  }
}
