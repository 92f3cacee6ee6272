/**
 * The only file that imports nact. nact gives each actor a sequential mailbox, a hierarchy and a
 * stop cascade; everything else (supervision, asks, dead letters, death watch) is ours. Written
 * around the defects docs/design.md lists for nact 7.6.2, each pinned by a test in test/nact-cell.test.ts:
 *  1. spawnStateless ignores onCrash: we only ever use `spawn`, with our own onCrash.
 *  2. An escalation answered with `resume` wedges the child: nested cells escalate, and the holder
 *     above them always answers with `stopChild`.
 *  3. An onCrash that throws crashes the process: ours runs everything inside try/catch.
 *  4. Auto-generated names are 32-bit random and collide: every cell gets an explicit name (a UUID
 *     when the caller has none).
 *  5. Each message copies the parent's children map: a cell's children live under a `$children`
 *     holder cell that never processes messages, so the parent's own map holds at most one entry.
 *  6. Messages to stopped actors vanish: `dispatch` checks liveness first and reports a miss to the
 *     caller, which routes it to dead letters.
 *  7. (found here) `stop` never reaches children: nact's Actor.stop passes actor objects where its
 *     stop function expects references, so children are detached but never stopped. Cells keep
 *     their own children and stop them first, deepest first; the host stops its top-level cells.
 *  8. (found here, a cost rather than a defect) nact handles each message in a setImmediate of its
 *     own, one per turn of the event loop: deliveries wait in the cell's own queue, and one nact
 *     message takes a run of them (DRAIN_BUDGET, DRAIN_MS).
 */
import { randomUUID } from 'node:crypto';
import nact from 'nact';

type NactRef = nact.Ref<unknown>;
type SupervisionContext = nact.SupervisionContext<unknown, NactRef>;
// nact's own typings use the wrapper type for its decision symbols.
// eslint-disable-next-line @typescript-eslint/no-wrapper-object-types
type CrashDecision = Symbol;

const HOLDER_NAME = '$children';

export interface CellCallbacks<D> {
  /** Handles one delivery, in mailbox order; a throw or rejection is a crash. */
  handle(delivery: D): Promise<void> | void;
  /** The cell crashed while handling `delivery` and has been stopped. Called at most once, after the stop. */
  crashed(error: unknown, delivery: D | undefined): void;
  /** The cell has stopped, for whatever reason. Called once. */
  stopped(): void;
}

/** Internal message that reads how many nact children a cell has (used by tests of defect 5). */
interface ChildCountProbe {
  readonly probe: 'child-count';
  readonly resolve: (count: number) => void;
}

/** Tells the cell to take deliveries off its own queue (see DRAIN_BUDGET). */
interface Drain {
  readonly drain: true;
}

type Mail = Drain | ChildCountProbe;

const DRAIN: Drain = { drain: true };

/**
 * How many deliveries one turn of a cell's mailbox takes at most before it lets the event loop go round.
 * nact runs each message in its own setImmediate, so a mailbox took one message per turn of the
 * event loop: a burst of 64 asks to one actor needed 64 turns, and its 64 answers left in 64
 * writes. Deliveries now wait in the cell's own queue, and one nact message takes up to this many.
 */
const DRAIN_BUDGET = 64;
/** ...and for how long (milliseconds) it goes on taking them: a mailbox of slow messages still yields often. */
const DRAIN_MS = 2;
/** Taken slots at the queue's front are dropped once there are this many and they are half of it. */
const QUEUE_TRIM = 1024;

export class CellHost {
  private readonly system: NactRef;
  private stopped = false;
  private readonly topLevel = new Set<Cell<unknown>>();

  constructor() {
    this.system = nact.start();
  }

  spawn<D>(parent: Cell<unknown> | undefined, name: string | undefined, callbacks: CellCallbacks<D>): Cell<D> {
    if (this.stopped) throw new Error('cell host is stopped');
    const parentRef = parent ? parent.holderRef() : this.system;
    const siblings = parent ? parent.children : this.topLevel;
    const cell = new Cell<D>(parentRef, name ?? randomUUID(), callbacks, parent !== undefined, siblings);
    return cell;
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    for (const cell of [...this.topLevel]) cell.stop();
    nact.stop(this.system);
  }
}

export class Cell<D> {
  readonly name: string;
  private readonly ref: NactRef;
  private holder: NactRef | undefined;
  private alive = true;
  private crashReported = false;
  /** @internal This cell's live children (defect 7: nact will not stop them for us). */
  readonly children = new Set<Cell<unknown>>();
  /** Deliveries not yet taken, in order: while any wait, a Drain is queued in nact's mailbox or being handled. */
  private readonly queue: (D | undefined)[] = [];
  private queueHead = 0;
  /** The delivery being handled (what a crash is reported against). */
  private current: D | undefined;
  /** A Drain waits in nact's mailbox; or one is being handled (and takes what arrives meanwhile). */
  private drainQueued = false;
  private draining = false;

  constructor(
    parentRef: NactRef,
    name: string,
    private readonly callbacks: CellCallbacks<D>,
    nested: boolean,
    private readonly siblings: Set<Cell<unknown>>,
  ) {
    this.name = name;
    const handler = async (state: unknown, mail: Mail, ctx: nact.ActorContext<Mail, NactRef>) => {
      if ('probe' in mail) {
        mail.resolve(ctx.children.size);
        return state;
      }
      this.drainQueued = false;
      this.draining = true;
      const started = performance.now();
      for (let taken = 0; taken < DRAIN_BUDGET && this.alive && this.queueHead < this.queue.length && performance.now() - started < DRAIN_MS; taken += 1) {
        const delivery = this.queue[this.queueHead] as D;
        // Taken: the slot lets go of it, and a queue that never empties is trimmed as it goes.
        this.queue[this.queueHead] = undefined;
        this.queueHead += 1;
        if (this.queueHead >= QUEUE_TRIM && this.queueHead * 2 >= this.queue.length) {
          this.queue.splice(0, this.queueHead);
          this.queueHead = 0;
        }
        this.current = delivery;
        await this.callbacks.handle(delivery);
        this.current = undefined;
      }
      this.draining = false;
      if (this.queueHead >= this.queue.length) {
        this.queue.length = 0;
        this.queueHead = 0;
      } else {
        this.queueDrain();
      }
      return state;
    };
    // Defect 1: always `spawn` (never spawnStateless) so that onCrash is honoured.
    this.ref = nact.spawn(parentRef, handler, name, {
      onCrash: (mail: Mail | undefined, error: unknown, ctx: SupervisionContext) => this.onOwnCrash(mail, error, ctx, nested),
      afterStop: () => this.afterStop(),
    });
    siblings.add(this as Cell<unknown>);
  }

  get isAlive(): boolean {
    return this.alive;
  }

  /** Queues a delivery. Returns false, delivering nothing, when the cell is no longer alive (defect 6). */
  dispatch(delivery: D): boolean {
    if (!this.alive) return false;
    this.queue.push(delivery);
    if (!this.draining) this.queueDrain();
    return true;
  }

  private queueDrain(): void {
    if (this.drainQueued || !this.alive) return;
    this.drainQueued = true;
    nact.dispatch(this.ref, DRAIN);
  }

  /** Stops this cell and, first, all its descendants. */
  stop(): void {
    for (const child of [...this.children]) child.stop();
    if (!this.alive) return;
    this.alive = false;
    this.queue.length = 0;
    this.queueHead = 0;
    nact.stop(this.ref);
  }

  /** How many nact children this cell holds itself (defect 5: at most one, its holder). */
  nactChildCount(): Promise<number> {
    return new Promise((resolve) => {
      if (!this.alive) {
        resolve(0);
        return;
      }
      const probe: ChildCountProbe = { probe: 'child-count', resolve };
      nact.dispatch(this.ref, probe);
    });
  }

  /** The ref under which this cell's children are spawned: a holder that never processes messages. */
  holderRef(): NactRef {
    if (!this.alive) throw new Error(`cell ${this.name} is stopped`);
    if (!this.holder) {
      const holder = nact.spawn(this.ref, (state: unknown) => state, HOLDER_NAME, {
        onCrash: (_mail: unknown, _error: unknown, ctx: SupervisionContext, child?: NactRef) =>
          Cell.onEscalation(ctx, child),
      });
      this.holder = holder;
    }
    return this.holder;
  }

  /** Defect 2: an escalated child is always stopped, never resumed; defect 3: nothing here throws. */
  private static onEscalation(ctx: SupervisionContext, child: NactRef | undefined): CrashDecision {
    try {
      const childName = (child as { name?: string } | undefined)?.name;
      // A child already gone from the holder has nothing left to stop; resuming the idle holder is a no-op.
      if (childName === undefined || !ctx.children.has(childName)) return ctx.resume;
      return ctx.stopChild;
    } catch {
      return ctx.resume;
    }
  }

  private onOwnCrash(_mail: Mail | undefined, error: unknown, ctx: SupervisionContext, nested: boolean): CrashDecision {
    try {
      // Already stopped (by us, or by a parent's stop cascade that removed ctx.parent): nact would
      // throw on escalating from here, and resuming a stopped actor is a no-op.
      if (!this.alive || ctx.parent === undefined) {
        this.alive = false;
        return ctx.resume;
      }
      this.alive = false;
      for (const child of [...this.children]) child.stop();
      const delivery = this.current;
      this.current = undefined;
      this.queue.length = 0;
      this.queueHead = 0;
      this.reportCrash(error, delivery);
      // A nested cell escalates to its holder, which stops it; a top-level cell stops itself
      // (escalating to nact's system would only print to the console and stop it).
      return nested ? ctx.escalate : ctx.stop;
    } catch {
      return ctx.stop;
    }
  }

  private reportCrash(error: unknown, delivery: D | undefined): void {
    if (this.crashReported) return;
    this.crashReported = true;
    // Reported after nact has stopped the cell and freed its name, so a restart can reuse it.
    setImmediate(() => {
      try {
        this.callbacks.crashed(error, delivery);
      } catch {
        // Defect 3: a failing crash listener must never take the process down.
      }
    });
  }

  private afterStop(): void {
    this.alive = false;
    this.siblings.delete(this as Cell<unknown>);
    try {
      this.callbacks.stopped();
    } catch {
      // Same as above: a listener's failure stays inside it.
    }
  }
}
