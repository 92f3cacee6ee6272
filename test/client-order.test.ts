/**
 * The client hands frames on in the order the node sent them: an event written right behind a
 * reply, in the same read, reaches its listener after the ask's caller has seen the reply.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { AcpClient } from '../runtime/client.js';
import { encodeFrame, FrameDecoder, PROTOCOL_VERSION, type Envelope } from '../runtime/codec.js';

test('a reply and an event in one read: the caller sees the reply before the listener sees the event', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'acp-client-order-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const socketPath = join(dir, 'fake.sock');
  let watchId: number | undefined;
  const server = createServer((socket: Socket) => {
    const decoder = new FrameDecoder(1024 * 1024);
    socket.on('data', (chunk: Buffer) => {
      for (const frame of decoder.push(chunk) as Envelope[]) {
        if (frame.k === 'hello') socket.write(encodeFrame({ v: PROTOCOL_VERSION, k: 'hello', body: { cluster: 'lab', node: 'n1', incarnation: 1 } }));
        else if (frame.k === 'watch' && typeof frame.id === 'number') watchId = frame.id;
        else if (frame.k === 'ask' && typeof frame.id === 'number' && watchId !== undefined) {
          // One write: the reply, then an event of the stream.
          socket.write(Buffer.concat([encodeFrame({ v: PROTOCOL_VERSION, k: 'reply', id: frame.id, body: { type: 'pong' } }), encodeFrame({ v: PROTOCOL_VERSION, k: 'event', id: watchId, body: { type: 'cdb.events' } })]));
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  t.teardown(() => server.close());
  const client = await AcpClient.connect({ socketPath, apiKey: 'k', cluster: 'lab' });
  t.teardown(() => client.close());
  const order: string[] = [];
  client.subscribe('cdb', { type: 'cdb.watch', prefix: 'object/' }, (event) => order.push(event.type));
  await new Promise((resolve) => setTimeout(resolve, 50));
  const asked = (async () => {
    await client.ask('framework', { type: 'ping' });
    order.push('reply');
  })();
  await asked;
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.deepEqual(order, ['reply', 'cdb.events']);
});
