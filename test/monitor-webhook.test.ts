/**
 * Alarm notifications to a local HTTP receiver: JSON bodies, bearer and HMAC headers, retries with
 * backoff under one delivery id, the severity filter; and `monitor.alarm.test` through @primary on
 * a live daemon.
 */
import { createHmac } from 'node:crypto';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import test from 'ava';
import type { AlarmEffect } from '../actors/monitor/alarms.js';
import { Notifier } from '../actors/monitor/notify.js';
import type { ActorContext } from '../runtime/actor.js';
import { AcpError } from '../runtime/errors.js';
import { silentLogger } from '../runtime/logger.js';
import type { Message } from '../runtime/messages.js';
import { allRunning, client, eventually, makeHome, startDaemon } from './helpers/node.js';

interface Received {
  headers: IncomingHttpHeaders;
  text: string;
}

/** A receiver answering with `statuses` in turn (then 200). */
async function receiver(statuses: number[] = []): Promise<{ url: string; received: Received[]; close(): Promise<void> }> {
  const received: Received[] = [];
  const server = createServer((request, response) => {
    let text = '';
    request.on('data', (chunk: Buffer) => (text += chunk.toString()));
    request.on('end', () => {
      received.push({ headers: request.headers, text });
      response.statusCode = statuses.shift() ?? 200;
      response.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/hook`, received, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

function fakeContext(onTell: (message: Message) => void): ActorContext {
  return { node: { cluster: 'lab', node: 'n2', incarnation: 1 }, log: silentLogger(), self: { path: 'acp://lab/n2/monitor', tell: onTell } } as unknown as ActorContext;
}

const target = (name: string, value: Record<string, unknown>) => ({ key: `object/alarm-target/${name}`, value: { name, minSeverity: 'warning', ...value }, version: '1.0@n1', origin: 'n1' });
const raised: AlarmEffect = { kind: 'alarm', op: 'raise', id: 'node-down.n3', rule: 'node-down', subject: 'n3', severity: 'critical', term: 4, by: 'n2', detail: 'silent 1100 ms' };

test('an alarm change is POSTed as JSON with bearer and HMAC, retried with backoff under one delivery id until a 2xx', async (t) => {
  const hook = await receiver([500, 503]);
  t.teardown(() => hook.close());
  let notifier: Notifier | undefined;
  notifier = new Notifier(fakeContext((message) => notifier?.retry(String(message['key']))));
  notifier.apply([target('ops', { webhook: hook.url, bearer: 'tok-1', hmacSecret: 'a-secret-of-16-chars' })]);
  const started = Date.now();
  notifier.notify(raised);
  await eventually(() => (hook.received.length === 3 ? true : undefined), 10_000, 'three attempts');
  t.true(Date.now() - started >= 1400, 'backoff: 0.5 s, then 1 s');
  const ids = new Set(hook.received.map((request) => request.headers['x-acp-delivery']));
  t.deepEqual([...ids], ['lab:node-down.n3:raise:4']);
  for (const request of hook.received) {
    t.is(request.headers['authorization'], 'Bearer tok-1');
    t.is(request.headers['content-type'], 'application/json');
    t.is(request.headers['x-acp-signature'], `sha256=${createHmac('sha256', 'a-secret-of-16-chars').update(request.text).digest('hex')}`);
  }
  t.like(JSON.parse(hook.received[0]!.text), { type: 'alarm', op: 'raise', id: 'node-down.n3', severity: 'critical', term: 4, by: 'n2', cluster: 'lab' });
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.is(hook.received.length, 3, 'nothing after the 2xx');
  t.is(notifier.sent, 1);
  notifier.stop();
});

test('a target below the alarm severity gets nothing; a removed target gets nothing', async (t) => {
  const hook = await receiver();
  t.teardown(() => hook.close());
  const notifier = new Notifier(fakeContext(() => undefined));
  notifier.apply([target('pager', { webhook: hook.url, minSeverity: 'critical' })]);
  notifier.notify({ ...raised, id: 'clock-skew.n3', rule: 'clock-skew', severity: 'warning' });
  notifier.apply([{ ...target('pager', { webhook: hook.url }), deleted: true }]);
  notifier.notify(raised);
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.is(hook.received.length, 0);
  notifier.stop();
});

test('acp alarm target test: the primary POSTs a test notification; a dead receiver is ACP_ERR_MONITOR_WEBHOOK', async (t) => {
  const hook = await receiver();
  t.teardown(() => hook.close());
  const home = makeHome(t);
  await allRunning(await startDaemon(t, home));
  const connection = await client(t, home);
  await connection.ask('cdb', { type: 'cdb.put', key: 'object/alarm-target/ops', value: { name: 'ops', webhook: hook.url } });
  await connection.ask('cdb', { type: 'cdb.put', key: 'object/alarm-target/gone', value: { name: 'gone', webhook: 'http://127.0.0.1:9/nothing' } });
  const reply = await eventually(() => connection.ask<Message & { status: number }>('acp://lab/@primary/monitor', { type: 'monitor.alarm.test', target: 'ops' }), 15_000, 'the node to be primary and the target known');
  t.is(reply.status, 200);
  t.like(JSON.parse(hook.received[0]!.text), { type: 'alarm', op: 'test', by: 'n1' });
  const error = await t.throwsAsync(connection.ask('acp://lab/@primary/monitor', { type: 'monitor.alarm.test', target: 'gone' }), { instanceOf: AcpError });
  t.is(error?.code, 'ACP_ERR_MONITOR_WEBHOOK');
  const missing = await t.throwsAsync(connection.ask('acp://lab/@primary/monitor', { type: 'monitor.alarm.test', target: 'nosuch' }), { instanceOf: AcpError });
  t.is(missing?.code, 'ACP_ERR_CDB_NOT_FOUND');
});
