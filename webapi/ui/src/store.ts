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

export class Store {
  readonly records = new Map<string, RecordView>();
  private readonly listeners = new Set<Listener>();
  private readonly cancels: (() => void)[] = [];
  private pendingRender = false;
  /** Called at most every 50 ms after changes (the tree and status redraw). */
  onChange: () => void = () => undefined;

  constructor(private readonly wire: Wire, private readonly node: string) {}

  async start(onError: (message: string) => void): Promise<void> {
    for (const prefix of ['object/', 'meta/', 'stats/']) {
      const cancel = await this.wire.subscribe(
        this.wire.path(this.node, 'cdb'),
        { type: 'cdb.watch', prefix },
        (event) => this.take(event),
        (error) => onError(`watch of ${prefix} ended: ${error.message}`),
      );
      this.cancels.push(cancel);
    }
  }

  stop(): void {
    for (const cancel of this.cancels.splice(0)) cancel();
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

  private take(event: Message): void {
    if (event.type === 'cdb.snapshot') for (const record of event.records as RecordView[]) this.apply(record);
    else if (event.type === 'cdb.events') for (const record of event.records as RecordView[]) this.apply(record);
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
