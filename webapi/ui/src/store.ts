/**
 * The cluster as the page sees it: every object/, meta/ and stats/ record, kept live by CDB
 * watches over /ws (a snapshot, then each change as it commits; no polling).
 */
import type { Message, Wire } from './wire.js';

export interface RecordView {
  key: string;
  value: unknown;
  version: string;
  deleted?: true;
}

type Listener = (record: RecordView) => void;

const PREFIXES = ['object/', 'meta/', 'stats/'];
/** How long after a watch ended (the CDB restarted) it is asked for again, and again while that fails. */
const RESUBSCRIBE_MS = 1000;

export class Store {
  readonly records = new Map<string, RecordView>();
  private readonly listeners = new Set<Listener>();
  private readonly cancels = new Map<string, () => void>();
  /** Prefixes watched anew: their next snapshot replaces what is kept of them (a key deleted meanwhile goes). */
  private readonly stale = new Set<string>();
  private stopped = false;
  private pendingRender = false;
  /** Called at most every 50 ms after changes (the tree and status redraw). */
  onChange: () => void = () => undefined;

  /** `report` says what the page shows is not live (a message), or is again (''). */
  constructor(
    private readonly wire: Wire,
    private readonly node: string,
    private readonly report: (message: string) => void = () => undefined,
  ) {}

  async start(): Promise<void> {
    for (const prefix of PREFIXES) await this.watch(prefix);
  }

  stop(): void {
    this.stopped = true;
    for (const cancel of this.cancels.values()) cancel();
    this.cancels.clear();
  }

  private async watch(prefix: string): Promise<void> {
    const cancel = await this.wire.subscribe(
      this.wire.path(this.node, 'cdb'),
      { type: 'cdb.watch', prefix },
      (event) => this.take(prefix, event),
      // Refused (a CDB still restarting) once it had ended: asked again; otherwise (the socket closed) the page reconnects.
      (error) => (this.stale.has(prefix) ? this.resubscribe(prefix, error.message) : this.report(`watch of ${prefix} ended: ${error.message}`)),
    );
    this.cancels.set(prefix, cancel);
  }

  /**
   * The CDB ended a watch (it restarted): asked again until a snapshot comes; until every such
   * prefix has its snapshot, the page says it is not live.
   */
  private resubscribe(prefix: string, reason: string): void {
    if (this.stopped) return;
    this.cancels.delete(prefix);
    this.stale.add(prefix);
    this.report(`the cluster database restarted (${reason}); the view is not live until it answers again…`);
    setTimeout(() => {
      if (this.stopped) return;
      this.watch(prefix).catch(() => this.resubscribe(prefix, reason));
    }, RESUBSCRIBE_MS);
  }

  /** Each change as it happens (charts take stats from here). */
  listen(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  under(prefix: string): RecordView[] {
    return [...this.records.values()].filter((record) => record.key.startsWith(prefix)).sort((a, b) => a.key.localeCompare(b.key));
  }

  value<T>(key: string): T | undefined {
    return this.records.get(key)?.value as T | undefined;
  }

  private take(prefix: string, event: Message): void {
    if (event.type === 'watch.ended') return this.resubscribe(prefix, String(event.reason ?? 'its watch ended'));
    if (event.type === 'cdb.snapshot') {
      if (this.stale.delete(prefix)) {
        for (const key of [...this.records.keys()]) if (key.startsWith(prefix)) this.records.delete(key);
        if (this.stale.size === 0) this.report('');
      }
      for (const record of event.records as RecordView[]) this.apply(record);
    } else if (event.type === 'cdb.events') for (const record of event.records as RecordView[]) this.apply(record);
    else return;
    if (!this.pendingRender) {
      this.pendingRender = true;
      setTimeout(() => {
        this.pendingRender = false;
        this.onChange();
      }, 50);
    }
  }

  private apply(record: RecordView): void {
    if (record.deleted) this.records.delete(record.key);
    else this.records.set(record.key, record);
    for (const listener of this.listeners) listener(record);
  }
}
