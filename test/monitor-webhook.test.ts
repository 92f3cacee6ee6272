/**
 * Alarm notifications to a local HTTP receiver: JSON bodies, bearer and HMAC headers, retries with
 * backoff under one delivery id, the severity filter; and `monitor.alarm.test` through @primary on
 * a live daemon. A target that could never be delivered to (a bearer that cannot be a header value,
 * a URL with user info, an empty bearer or secret) is refused when written, by `acp alarm target
 * add` and by a raw cdb put alike; a failed delivery is logged with its cause.
 */
import { createHmac } from 'node:crypto';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import test from 'ava';
import type { AlarmEffect } from '../actors/monitor/alarms.js';
import { Notifier } from '../actors/monitor/notify.js';
import { parseKey, validateObject } from '../actors/model.js';
import { targetValue } from '../cli/monitor.js';
import type { ActorContext } from '../runtime/actor.js';
import { AcpError } from '../runtime/errors.js';
import { silentLogger } from '../runtime/logger.js';
import type { Message } from '../runtime/messages.js';
import { allRunning, client, eventually, makeHome, runCli, startDaemon } from './helpers/node.js';

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

function fakeContext(onTell: (message: Message) => void, logged?: string[]): ActorContext {
  const record = (_fields: unknown, line: string) => logged?.push(line);
  const log = logged ? { warn: record, error: record, info: record, debug: record } : silentLogger();
  return { node: { cluster: 'lab', node: 'n2', incarnation: 1 }, log, self: { path: 'acp://lab/n2/monitor', tell: onTell } } as unknown as ActorContext;
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

/** Targets no delivery could succeed with: the flags given, the stored value, and what the refusal says (flag, then rule). */
const BAD_TARGETS: readonly { what: string; flags: Record<string, string>; flag: RegExp; field: RegExp; rule: RegExp }[] = [
  { what: 'CR LF in the bearer', flags: { bearer: 'a\r\nX-Injected: 1' }, flag: /^--bearer: /, field: /field 'bearer'/, rule: /HTTP header value.*no CR, LF/ },
  { what: 'a tab in the bearer', flags: { bearer: 'a\tb' }, flag: /^--bearer: /, field: /field 'bearer'/, rule: /HTTP header value/ },
  { what: 'non-ASCII in the bearer', flags: { bearer: 'tök€n' }, flag: /^--bearer: /, field: /field 'bearer'/, rule: /HTTP header value.*no non-ASCII/ },
  { what: 'a trailing space in the bearer', flags: { bearer: 'token ' }, flag: /^--bearer: /, field: /field 'bearer'/, rule: /spaces only between/ },
  { what: 'an empty bearer', flags: { bearer: '' }, flag: /^--bearer: /, field: /field 'bearer'/, rule: /must not be empty/ },
  { what: 'an empty HMAC secret', flags: { hmacSecret: '' }, flag: /^--hmac-secret: /, field: /field 'hmacSecret'/, rule: /must not be empty/ },
  { what: 'a short HMAC secret', flags: { hmacSecret: 'short' }, flag: /^--hmac-secret: /, field: /field 'hmacSecret'/, rule: /16 characters or more/ },
  { what: 'user info in the URL', flags: { webhook: 'http://user:pw@127.0.0.1:18999/creds' }, flag: /^--webhook: /, field: /field 'webhook'/, rule: /user name or password.*--bearer or --hmac-secret/ },
  { what: 'a user name alone in the URL', flags: { webhook: 'https://token@hooks.example/x' }, flag: /^--webhook: /, field: /field 'webhook'/, rule: /user name or password/ },
];

const targetOf = (name: string, flags: Record<string, string>) => ({ name, webhook: 'http://127.0.0.1:18999/x', minSeverity: 'warning', ...flags });

test('a target that cannot be delivered to is refused by the schema (field and rule) and by acp alarm target add (flag and rule)', (t) => {
  for (const bad of BAD_TARGETS) {
    const stored = t.throws(() => validateObject(parseKey('object/alarm-target/h'), targetOf('h', bad.flags)), { instanceOf: AcpError }, bad.what);
    t.is(stored?.code, 'ACP_ERR_CDB_BAD_VALUE', bad.what);
    t.regex(stored?.message ?? '', bad.field, bad.what);
    t.regex(stored?.message ?? '', bad.rule, bad.what);
    const added = t.throws(() => targetValue(targetOf('h', bad.flags)), { instanceOf: AcpError }, bad.what);
    t.is(added?.code, 'ACP_ERR_CLI_USAGE', bad.what);
    t.regex(added?.message ?? '', bad.flag, bad.what);
    t.regex(added?.message ?? '', bad.rule, bad.what);
  }
  t.like(targetValue(targetOf('h', { bearer: 'abc.DEF-123_~+/= with spaces', hmacSecret: 'a-secret-of-16-chars' })), { bearer: 'abc.DEF-123_~+/= with spaces', hmacSecret: 'a-secret-of-16-chars' });
  t.false('bearer' in targetValue({ name: 'h', webhook: 'http://127.0.0.1:18999/x', minSeverity: 'warning', bearer: undefined }), 'a flag left out stays out');
});

test('a bad target is refused through the CLI and a raw cdb put on a live daemon, and nothing is stored', async (t) => {
  t.timeout(90_000);
  const home = makeHome(t);
  await allRunning(await startDaemon(t, home));
  const connection = await client(t, home);
  const cases = BAD_TARGETS.filter((bad) => /CR LF|empty|user info/.test(bad.what));
  await Promise.all(
    cases.map(async (bad, index) => {
      const name = `bad${index}`;
      const refused = await t.throwsAsync(connection.ask('cdb', { type: 'cdb.put', key: `object/alarm-target/${name}`, value: targetOf(name, bad.flags) }), { instanceOf: AcpError }, bad.what);
      t.is(refused?.code, 'ACP_ERR_CDB_BAD_VALUE', bad.what);
      t.regex(refused?.message ?? '', bad.field, bad.what);
      t.regex(refused?.message ?? '', bad.rule, bad.what);
      const flags = Object.entries(bad.flags).flatMap(([flag, value]) => [`--${flag === 'hmacSecret' ? 'hmac-secret' : flag}`, value]);
      const cli = await runCli(['--json', 'alarm', 'target', 'add', name, ...(bad.flags['webhook'] ? [] : ['--webhook', 'http://127.0.0.1:18999/x']), ...flags], home);
      t.not(cli.code, 0, `${bad.what}: ${cli.stdout}`);
      const error = (JSON.parse(cli.stdout) as { error?: { code: string; message: string } }).error;
      t.is(error?.code, 'ACP_ERR_CLI_USAGE', bad.what);
      t.regex(error?.message ?? '', bad.flag, bad.what);
      t.regex(error?.message ?? '', bad.rule, bad.what);
      const missing = await t.throwsAsync(connection.ask('cdb', { type: 'cdb.get', key: `object/alarm-target/${name}` }), { instanceOf: AcpError });
      t.is(missing?.code, 'ACP_ERR_CDB_NOT_FOUND', `${bad.what}: not stored`);
    }),
  );
  const added = await runCli(['alarm', 'target', 'add', 'good', '--webhook', 'http://127.0.0.1:18999/x', '--bearer', 'tok-1', '--hmac-secret', 'a-secret-of-16-chars'], home);
  t.is(added.code, 0, added.stderr);
});

test('a stored target the schema refuses is not used, is logged once, and acp alarm target test says why', async (t) => {
  const logged: string[] = [];
  const notifier = new Notifier(fakeContext(() => undefined, logged));
  notifier.apply([target('old', { webhook: 'http://user:pw@127.0.0.1:18999/creds' })]);
  t.is(logged.length, 1);
  t.regex(logged[0]!, /alarm target 'old' is not used, it is invalid: field 'webhook': must not include a user name or password/);
  const error = await t.throwsAsync(notifier.test('old', 1), { instanceOf: AcpError });
  t.is(error?.code, 'ACP_ERR_MONITOR_WEBHOOK');
  t.regex(error?.message ?? '', /invalid: field 'webhook'.*acp alarm target add old/);
  notifier.notify(raised);
  t.is(logged.length, 1, 'no delivery tried');
  notifier.stop();
});

test('a failed delivery is logged with its cause: a refused connection, a DNS failure, a redirect (not followed)', async (t) => {
  const closed = await receiver();
  await closed.close();
  const elsewhere = await receiver();
  t.teardown(() => elsewhere.close());
  const redirecting = createServer((request, response) => {
    request.resume();
    response.writeHead(302, { location: elsewhere.url }).end();
  });
  await new Promise<void>((resolve) => redirecting.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => redirecting.close(() => resolve())));
  const redirectUrl = `http://127.0.0.1:${(redirecting.address() as AddressInfo).port}/hook`;
  const cases = [
    { webhook: closed.url, cause: /alarm notification failed: fetch failed: connect ECONNREFUSED 127\.0\.0\.1:\d+/ },
    { webhook: 'http://nosuch.invalid/hook', cause: /alarm notification failed: fetch failed: getaddrinfo (ENOTFOUND|EAI_AGAIN) nosuch\.invalid/ },
    { webhook: redirectUrl, cause: /alarm notification failed: HTTP 302, a redirect to "http:\/\/127\.0\.0\.1:\d+\/hook": redirects are not followed/ },
  ];
  for (const { webhook, cause } of cases) {
    const logged: string[] = [];
    const notifier = new Notifier(fakeContext(() => undefined, logged));
    notifier.apply([target('ops', { webhook })]);
    notifier.notify(raised);
    const line = await eventually(() => logged[0], 10_000, `a log line for ${webhook}`);
    t.regex(line, cause);
    notifier.stop();
  }
  t.is(elsewhere.received.length, 0, 'the redirect was not followed');
});
