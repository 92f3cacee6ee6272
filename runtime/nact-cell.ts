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

type Mail<D> = { readonly delivery: D } | ChildCountProbe;

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

  constructor(
    parentRef: NactRef,
    name: string,
    private readonly callbacks: CellCallbacks<D>,
    nested: boolean,
    private readonly siblings: Set<Cell<unknown>>,
  ) {
    this.name = name;
    const handler = async (state: unknown, mail: Mail<D>, ctx: nact.ActorContext<Mail<D>, NactRef>) => {
      if ('probe' in mail) {
        mail.resolve(ctx.children.size);
        return state;
      }
      await this.callbacks.handle(mail.delivery);
      return state;
    };
    // Defect 1: always `spawn` (never spawnStateless) so that onCrash is honoured.
    this.ref = nact.spawn(parentRef, handler, name, {
      onCrash: (mail: Mail<D> | undefined, error: unknown, ctx: SupervisionContext) => this.onOwnCrash(mail, error, ctx, nested),
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
    nact.dispatch(this.ref, { delivery });
    return true;
  }

  /** Stops this cell and, first, all its descendants. */
  stop(): void {
    for (const child of [...this.children]) child.stop();
    if (!this.alive) return;
    this.alive = false;
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

  private onOwnCrash(mail: Mail<D> | undefined, error: unknown, ctx: SupervisionContext, nested: boolean): CrashDecision {
    try {
      // Already stopped (by us, or by a parent's stop cascade that removed ctx.parent): nact would
      // throw on escalating from here, and resuming a stopped actor is a no-op.
      if (!this.alive || ctx.parent === undefined) {
        this.alive = false;
        return ctx.resume;
      }
      this.alive = false;
      for (const child of [...this.children]) child.stop();
      const delivery = mail && 'delivery' in mail ? mail.delivery : undefined;
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
