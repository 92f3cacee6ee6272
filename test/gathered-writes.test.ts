import { Writable } from 'node:stream';
import test from 'ava';
import { gatheredWriter } from '../adapters/frame-listener.js';

const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

/** A socket stand-in that records each write it is handed (a writev of gathered chunks is one). */
function recordingSocket(): { socket: Writable; writes: number[] } {
  const writes: number[] = [];
  const socket = new Writable({
    write(_chunk: Buffer, _encoding, done) {
      writes.push(1);
      done();
    },
    writev(chunks, done) {
      writes.push(chunks.length);
      done();
    },
  });
  return { socket, writes };
}

test('frames written one a turn (answers leaving a mailbox that takes one message a turn) share a write', async (t) => {
  const { socket, writes } = recordingSocket();
  const write = gatheredWriter(socket);
  for (let i = 0; i < 12; i += 1) {
    write(Buffer.from([i]));
    await nextTurn();
  }
  for (let i = 0; i < 3; i += 1) await nextTurn();
  t.is(writes.reduce((sum, count) => sum + count, 0), 12, 'every frame was written');
  t.true(writes.length <= 2, `12 frames in ${writes.length} writes`);
});

test('a lone frame is written by the second turn after it', async (t) => {
  const { socket, writes } = recordingSocket();
  const write = gatheredWriter(socket);
  write(Buffer.from('x'));
  await nextTurn();
  await nextTurn();
  t.deepEqual(writes, [1]);
});

test('frames that never stop coming are still written at least every 17 turns, and a large batch at once', async (t) => {
  const { socket, writes } = recordingSocket();
  const write = gatheredWriter(socket);
  const turnsOfWrites: number[] = [];
  for (let turn = 0; turn < 100; turn += 1) {
    const before = writes.length;
    write(Buffer.from([turn]));
    await nextTurn();
    if (writes.length > before) turnsOfWrites.push(turn);
  }
  const gaps = turnsOfWrites.slice(1).map((turn, index) => turn - turnsOfWrites[index]!);
  t.true(turnsOfWrites.length >= 5, `written in turns ${turnsOfWrites.join(',')}`);
  t.true(gaps.every((gap) => gap <= 17), `gaps ${gaps.join(',')}`);

  const big = recordingSocket();
  const writeBig = gatheredWriter(big.socket);
  for (let turn = 0; turn < 4; turn += 1) {
    writeBig(Buffer.alloc(40 * 1024));
    await nextTurn();
  }
  t.true(big.writes.length >= 1 && big.writes[0]! <= 2, `64 KiB waiting is written at once: ${big.writes.join(',')}`);
});
