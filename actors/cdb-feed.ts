import type { ActorContext } from '../runtime/actor.js';
import { errorMessage } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import type { CdbEvents, CdbSnapshot, RecordView } from './cdb/index.js';

const RESUBSCRIBE = 'cdb-feed.resubscribe';
const RETRY_MS = 1000;

/**
 * Keeps a service in step with one CDB prefix: a watch with the service itself as subscriber (a
 * snapshot, then every change), taken again when the CDB restarts or cannot be reached yet. The
 * records arrive in the service's own mailbox: `handle` takes them there.
 */
export class CdbFeed {
  private watch: number | undefined;
  private retry: NodeJS.Timeout | undefined;
  /** The watch ended (the CDB restarted): the next snapshot is of a CDB that may have lost what is in memory. */
  private ended = false;

  /**
   * `rewatched` runs once the watch is taken again after the CDB restarted (its first snapshot
   * then): a CDB that restarted lost its meta/ and stats/ (they live in memory), so what the
   * service publishes there is published again.
   */
  constructor(
    private readonly ctx: ActorContext,
    private readonly prefix: string,
    private readonly apply: (records: readonly RecordView[]) => void,
    private readonly rewatched: () => void = () => undefined,
  ) {}

  async start(): Promise<void> {
    const cdb = this.ctx.ref(`acp://${this.ctx.node.cluster}/${this.ctx.node.node}/cdb`);
    try {
      const reply = await cdb.ask<Message & { watch: number }>({ type: 'cdb.watch', prefix: this.prefix, subscriber: this.ctx.self.path }, { timeoutMs: 5000 });
      this.watch = reply.watch;
    } catch (error) {
      this.ctx.log.warn({ prefix: this.prefix, err: errorMessage(error) }, 'cannot watch the cdb yet; retrying');
      this.again();
    }
  }

  /** Takes a message of the feed's (true), or leaves it to the service (false). */
  handle(message: Message): boolean | Promise<void> {
    switch (message.type) {
      case 'cdb.snapshot': {
        const snapshot = message as CdbSnapshot;
        if (this.watch === undefined || snapshot.watch === this.watch) this.apply(snapshot.records);
        if (this.ended) {
          this.ended = false;
          this.rewatched();
        }
        return true;
      }
      case 'cdb.events':
        this.apply((message as CdbEvents).records);
        return true;
      case 'watch.ended':
        this.watch = undefined;
        this.ended = true;
        this.again();
        return true;
      case RESUBSCRIBE:
        return message['prefix'] === this.prefix ? this.start() : false;
      default:
        return false;
    }
  }

  stop(): void {
    clearTimeout(this.retry);
  }

  private again(): void {
    clearTimeout(this.retry);
    this.retry = setTimeout(() => this.ctx.self.tell({ type: RESUBSCRIBE, prefix: this.prefix }), RETRY_MS);
  }
}
