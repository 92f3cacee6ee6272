import type { CdbEvents, RecordView } from '../../actors/cdb/index.js';
import type { Message } from '../../runtime/messages.js';

/** One change seen by a watch: a record of a cdb.events message, with its own number. */
export interface Change {
  watch: number;
  seq: number;
  record: RecordView;
}

/** The changes in a watch's messages (its cdb.events, record by record), in the order they came. */
export function changesOf(messages: readonly Message[]): Change[] {
  return messages
    .filter((message): message is CdbEvents => message.type === 'cdb.events')
    .flatMap((events) => events.records.map((record, index) => ({ watch: events.watch, seq: events.seq + index, record })));
}
