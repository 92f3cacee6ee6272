/**
 * The web API on fastify: REST with bearer tokens (the relay's authority decides, as on the API
 * socket), /ws speaking the wire protocol with the same checks, and /metrics as Prometheus text.
 */
import { request as httpRequest } from 'node:http';
import test, { type ExecutionContext } from 'ava';
import WebSocket from 'ws';
import { encodeFrame, FrameDecoder, type Envelope } from '../runtime/codec.js';
import type { AcpClient } from '../runtime/client.js';
import type { Message } from '../runtime/messages.js';
import { allRunning, client, eventually, makeHome, startDaemon } from './helpers/node.js';

interface Node {
  base: string;
  port: number;
  auditor: string;
  operator: string;
  /** The node's own client, with the API key. */
  admin: AcpClient;
}

async function boot(t: ExecutionContext): Promise<Node> {
  const home = makeHome(t);
  await allRunning(await startDaemon(t, home));
  const connection = await client(t, home);
  const token = async (role: string) => (await connection.ask<Message & { secret: string }>('api', { type: 'api.token.create', role })).secret;
  const address = await connection.ask<Message & { url: string }>('webapi', { type: 'webapi.address' });
  await connection.ask('cdb', { type: 'cdb.put', key: 'object/system/dev1', value: { name: 'dev1', driver: 'sim' } });
  return { base: address.url.replace(/\/$/, ''), port: Number(new URL(address.url).port), auditor: await token('auditor'), operator: await token('operator'), admin: connection };
}

async function call(node: Node, method: string, path: string, token?: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const response = await fetch(`${node.base}${path}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: response.status, json: (await response.json()) as Record<string, unknown> };
}

/** A request sent as written: fetch resolves '.' and '..' in a path, `curl --path-as-is` does not. */
function asIs(node: Node, method: string, path: string, token?: string, extra: Record<string, string> = {}): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const headers = { ...(token ? { authorization: `Bearer ${token}` } : {}), ...extra };
    const sent = httpRequest({ host: new URL(node.base).hostname, port: node.port, method, path, headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => {
        try {
          resolve({ status: response.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> });
        } catch (error) {
          reject(error);
        }
      });
    });
    sent.on('error', reject);
    sent.end();
  });
}

const code = (json: Record<string, unknown>) => (json.error as { code?: string } | undefined)?.code;
const message = (json: Record<string, unknown>) => String((json.error as { message?: string } | undefined)?.message);

/** Every refusal is the documented envelope and nothing else: `{error:{code,kind,message}}`. */
function assertEnvelope(t: ExecutionContext, reply: { status: number; json: Record<string, unknown> }, status: number, errorCode: string): string {
  t.is(reply.status, status, JSON.stringify(reply.json));
  t.deepEqual(Object.keys(reply.json), ['error']);
  t.deepEqual(Object.keys(reply.json.error as object).sort(), ['code', 'kind', 'message']);
  t.is(code(reply.json), errorCode);
  return message(reply.json);
}

test('REST: no credentials is 401; an auditor reads systems but may not start one (403, ACP_ERR_AUTH_FORBIDDEN); an operator starts it; bad input names the field', async (t) => {
  const node = await boot(t);
  const anonymous = await call(node, 'GET', '/api/v1/systems');
  t.is(anonymous.status, 401);
  t.is(code(anonymous.json), 'ACP_ERR_AUTH_BAD_TOKEN');
  const listed = await call(node, 'GET', '/api/v1/systems', node.auditor);
  t.is(listed.status, 200);
  t.deepEqual((listed.json.systems as { id: string }[]).map((system) => system.id), ['dev1']);
  const refused = await call(node, 'POST', '/api/v1/systems/dev1/start', node.auditor);
  t.is(refused.status, 403);
  t.is(code(refused.json), 'ACP_ERR_AUTH_FORBIDDEN');
  const started = await call(node, 'POST', '/api/v1/systems/dev1/start', node.operator);
  t.is(started.status, 200, JSON.stringify(started.json));
  t.like(started.json, { type: 'system.started', id: 'dev1', state: 'running' });
  const one = await call(node, 'GET', '/api/v1/systems/dev1', node.auditor);
  t.like((one.json.states as unknown[])[0], { state: 'running' });
  const bad = await call(node, 'POST', '/api/v1/systems', node.operator, { name: 'x1', driver: 'sim', vcpus: 'many' });
  t.is(bad.status, 400);
  t.regex(String((bad.json.error as { message: string }).message), /field 'vcpus'/);
  const badId = await call(node, 'GET', '/api/v1/systems/NOPE', node.auditor);
  t.is(badId.status, 400);
  const created = await call(node, 'POST', '/api/v1/systems', node.operator, { name: 'x1', driver: 'sim' });
  t.is(created.status, 200, JSON.stringify(created.json));
  const again = await call(node, 'POST', '/api/v1/systems', node.operator, { name: 'x1', driver: 'sim' });
  t.is(again.status, 409, 'an existing system is not replaced');
  // What a spec names outside itself is checked as the CLI checks it, and nothing is created.
  const elsewhere = await call(node, 'POST', '/api/v1/systems', node.operator, { name: 'x2', driver: 'sim', node: 'n9' });
  t.regex(assertEnvelope(t, elsewhere, 400, 'ACP_ERR_SYSTEM_UNKNOWN_NODE'), /no node 'n9' in the cluster \(it has n1; acp nodes\)/);
  const preferred = await call(node, 'POST', '/api/v1/systems', node.operator, { name: 'x2', driver: 'sim', ha: true, prefer: { n1: 2, n7: 1 } });
  t.regex(assertEnvelope(t, preferred, 400, 'ACP_ERR_SYSTEM_UNKNOWN_NODE'), /no node 'n7'/);
  const noPool = await call(node, 'POST', '/api/v1/systems', node.operator, { name: 'x2', disks: [{ pool: 'nopool', volume: 'd1' }] });
  t.regex(assertEnvelope(t, noPool, 404, 'ACP_ERR_STORAGE_NOT_FOUND'), /no pool 'nopool' \(for nopool\/d1\): acp storage pool ls/);
  // A witness votes but runs no systems.
  await node.admin.ask('cdb', { type: 'cdb.put', key: 'object/node/w1', value: { name: 'w1', witness: true } });
  const onWitness = await call(node, 'POST', '/api/v1/systems', node.operator, { name: 'x2', driver: 'sim', node: 'w1' });
  t.regex(assertEnvelope(t, onWitness, 400, 'ACP_ERR_SYSTEM_UNKNOWN_NODE'), /'w1' is a witness: it votes but runs no systems \(the nodes that do: n1\)/);
  // A boot disk named as POOL/VOLUME must be one of its disks (with none, it was taken and never used).
  const strayBoot = await call(node, 'POST', '/api/v1/systems', node.operator, { name: 'x2', boot: { disk: 'local/d1' } });
  t.regex(assertEnvelope(t, strayBoot, 400, 'ACP_ERR_SCHEMA_REJECTED'), /field 'boot\.disk': 'local\/d1' is not one of its disks \(none\)/);
  t.is((await call(node, 'GET', '/api/v1/systems/x2', node.auditor)).status, 404, 'a refused system was created');
  const openapi = await call(node, 'GET', '/api/v1/openapi.json');
  t.truthy((openapi.json.paths as Record<string, unknown>)['/api/v1/systems/{id}/start']);
  // What fastify refuses itself is answered in the API's shape too.
  const notJson = await fetch(`${node.base}/api/v1/systems`, { method: 'POST', headers: { authorization: `Bearer ${node.operator}`, 'content-type': 'application/json' }, body: '{"name": ' });
  t.is(notJson.status, 400);
  t.is(code((await notJson.json()) as Record<string, unknown>), 'ACP_ERR_WEB_BAD_BODY');
  const noRoute = await call(node, 'GET', '/api/v1/nothing-here', node.auditor);
  t.is(noRoute.status, 404);
  t.is(code(noRoute.json), 'ACP_ERR_WEB_NO_ROUTE');
  t.regex(String((noRoute.json.error as { message: string }).message), /openapi\.json/);
});

test('REST: cluster status, health, networks, storage and alarms; an alarm id is checked and an auditor may not acknowledge', async (t) => {
  const node = await boot(t);
  await node.admin.ask('cdb', { type: 'cdb.put', key: 'object/network/lan', value: { name: 'lan', kind: 'bridge' } }).catch(() => undefined);
  // Acknowledgements go to the primary monitor: once the node has elected itself.
  const cluster = await eventually(async () => {
    const reply = await call(node, 'GET', '/api/v1/cluster', node.auditor);
    return reply.status === 200 && reply.json.primary === 'n1' ? reply : undefined;
  }, 20_000, 'a primary in GET /api/v1/cluster');
  t.is(cluster.json.cluster, 'lab');
  t.is(typeof cluster.json.health, 'number');
  t.true(Array.isArray(cluster.json.openAlarms) && Array.isArray(cluster.json.nodes));
  const health = await call(node, 'GET', '/api/v1/health', node.auditor);
  t.is(health.status, 200);
  t.true((health.json.score as number) >= 0 && (health.json.score as number) <= 100);
  const networks = await call(node, 'GET', '/api/v1/networks', node.auditor);
  t.is(networks.status, 200);
  t.true(Array.isArray(networks.json.networks));
  const storage = await call(node, 'GET', '/api/v1/storage', node.auditor);
  t.is(storage.status, 200);
  t.true(Array.isArray(storage.json.pools) && Array.isArray(storage.json.volumes));
  const alarms = await call(node, 'GET', '/api/v1/alarms?open=true', node.auditor);
  t.is(alarms.status, 200);
  t.true(Array.isArray(alarms.json.alarms));
  const badQuery = await call(node, 'GET', '/api/v1/alarms?open=maybe', node.auditor);
  t.is(badQuery.status, 400);
  t.is(code(badQuery.json), 'ACP_ERR_SCHEMA_REJECTED');
  t.regex(String((badQuery.json.error as { message: string }).message), /query parameter 'open'/);
  const badId = await call(node, 'POST', '/api/v1/alarms/Not An Id/ack', node.operator);
  t.is(badId.status, 400);
  t.regex(String((badId.json.error as { message: string }).message), /path parameter 'id'/);
  const auditorAck = await call(node, 'POST', '/api/v1/alarms/cpu.n1/ack', node.auditor);
  t.is(auditorAck.status, 403);
  t.is(code(auditorAck.json), 'ACP_ERR_AUTH_FORBIDDEN');
  const unknown = await call(node, 'POST', '/api/v1/alarms/cpu.n1/ack', node.operator);
  t.true(unknown.status >= 400 && /^ACP_ERR_/.test(code(unknown.json) ?? ''), JSON.stringify(unknown.json));
  const openapi = await call(node, 'GET', '/api/v1/openapi.json');
  for (const path of ['/api/v1/cluster', '/api/v1/health', '/api/v1/networks', '/api/v1/storage', '/api/v1/alarms', '/api/v1/alarms/{id}/ack']) t.truthy((openapi.json.paths as Record<string, unknown>)[path], path);
});

test("a path with '..' segments is refused as a path that leaves the API (ACP_ERR_WEB_BAD_PATH), not as a body; an 8000-character id as too long", async (t) => {
  const node = await boot(t);
  for (const path of ['/api/v1/systems/../../etc/passwd', '/api/v1/systems/%2e%2e/%2E%2E/etc/passwd', '/../../etc/passwd', '/api/v1/./status']) {
    const refused = assertEnvelope(t, await asIs(node, 'GET', path, node.auditor), 400, 'ACP_ERR_WEB_BAD_PATH');
    t.regex(refused, /segment/, path);
    t.regex(refused, /resolved/, path);
    t.notRegex(refused, /body/, path);
  }
  const long = assertEnvelope(t, await call(node, 'GET', `/api/v1/systems/${'a'.repeat(8000)}`, node.auditor), 400, 'ACP_ERR_SCHEMA_REJECTED');
  t.regex(long, /^path parameter 'id': is too long \(8000 characters\)/);
  t.regex(long, /1-63 characters/);
  t.notRegex(long, /body/);
  t.true(long.length < 400, 'the id is not echoed back');
  // What the HTTP layer refuses for a reason with no code of its own is not called a body problem either.
  const range = assertEnvelope(t, await asIs(node, 'GET', '/index.html', undefined, { range: 'bytes=99999999-' }), 416, 'ACP_ERR_WEB_REFUSED');
  t.regex(range, /HTTP 416/);
  t.notRegex(range, /body/);
});

test('an over-long id in a POST is refused in the documented envelope (400, ACP_ERR_SCHEMA_REJECTED), never as fastify\'s own FST_ERR_MAX_PARAM_LENGTH', async (t) => {
  const node = await boot(t);
  const start = assertEnvelope(t, await call(node, 'POST', `/api/v1/systems/${'a'.repeat(200)}/start`, node.operator), 400, 'ACP_ERR_SCHEMA_REJECTED');
  t.regex(start, /^path parameter 'id': is too long \(200 characters\): .*1-63 characters/);
  const ack = assertEnvelope(t, await call(node, 'POST', `/api/v1/alarms/${'a'.repeat(200)}/ack`, node.operator), 400, 'ACP_ERR_SCHEMA_REJECTED');
  t.regex(ack, /^path parameter 'id': is too long \(200 characters\)/);
});

test('a GET with a 101- to 4000-character id says the id is too long, not that there is no route', async (t) => {
  const node = await boot(t);
  for (const length of [64, 101, 1000, 4000]) {
    const refused = assertEnvelope(t, await call(node, 'GET', `/api/v1/systems/${'a'.repeat(length)}`, node.auditor), 400, 'ACP_ERR_SCHEMA_REJECTED');
    t.regex(refused, new RegExp(`^path parameter 'id': is too long \\(${length} characters\\): system ids are names, and names are 1-63 characters`));
  }
  const ok = await call(node, 'GET', `/api/v1/systems/dev1`, node.auditor);
  t.is(ok.status, 200);
});

test("a body with a '__proto__' or 'constructor.prototype' key is refused as such, not as invalid JSON; an unknown query parameter is named as one", async (t) => {
  const node = await boot(t);
  const post = async (body: string) => {
    const response = await fetch(`${node.base}/api/v1/systems`, { method: 'POST', headers: { authorization: `Bearer ${node.operator}`, 'content-type': 'application/json' }, body });
    return { status: response.status, json: (await response.json()) as Record<string, unknown> };
  };
  const proto = assertEnvelope(t, await post('{"name": "p1", "driver": "sim", "__proto__": {"admin": true}}'), 400, 'ACP_ERR_WEB_BAD_BODY');
  t.regex(proto, /'__proto__'/);
  t.regex(proto, /refused/);
  t.notRegex(proto, /not valid JSON/);
  const ctor = assertEnvelope(t, await post('{"name": "p1", "driver": "sim", "tags": {"constructor": {"prototype": {}}}}'), 400, 'ACP_ERR_WEB_BAD_BODY');
  t.regex(ctor, /'constructor'/);
  const broken = assertEnvelope(t, await post('{"name": '), 400, 'ACP_ERR_WEB_BAD_BODY');
  t.regex(broken, /not valid JSON/);
  // JSON only, and an action's options are an object: a text body is a 415, an array no options.
  const text = await fetch(`${node.base}/api/v1/systems`, { method: 'POST', headers: { authorization: `Bearer ${node.operator}`, 'content-type': 'text/plain' }, body: 'name=p1' });
  t.regex(assertEnvelope(t, { status: text.status, json: (await text.json()) as Record<string, unknown> }, 415, 'ACP_ERR_WEB_BAD_BODY'), /content-type text\/plain.*send JSON/);
  const listed = await fetch(`${node.base}/api/v1/systems/dev1/stop`, { method: 'POST', headers: { authorization: `Bearer ${node.operator}`, 'content-type': 'application/json' }, body: '[true]' });
  t.regex(assertEnvelope(t, { status: listed.status, json: (await listed.json()) as Record<string, unknown> }, 400, 'ACP_ERR_WEB_BAD_BODY'), /the body of stop is a JSON object of its options .*not an array/);
  const bogus = assertEnvelope(t, await call(node, 'GET', '/api/v1/alarms?bogus=1', node.auditor), 400, 'ACP_ERR_SCHEMA_REJECTED');
  t.regex(bogus, /^unknown query parameter 'bogus'/);
  t.regex(bogus, /takes: open/);
  t.notRegex(bogus, /body/);
});

test('/metrics is Prometheus text: every sample of a HELP/TYPE-declared acp_ metric, counters ending in _total', async (t) => {
  const node = await boot(t);
  const response = await fetch(`${node.base}/metrics`);
  t.is(response.status, 200);
  t.regex(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const text = await response.text();
  const declared = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const type = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line);
    if (type) {
      declared.set(type[1]!, type[2]!);
      continue;
    }
    if (line.startsWith('# HELP ')) continue;
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.eE+-]+|NaN|[+-]Inf)$/.exec(line);
    t.truthy(sample, `not a valid sample line: ${line}`);
    t.true(declared.has(sample![1]!), `${sample![1]} has no TYPE line`);
  }
  for (const [name, type] of declared) {
    t.true(name.startsWith('acp_'), name);
    if (type === 'counter') t.true(name.endsWith('_total'), `${name} is a counter`);
  }
  t.regex(text, /^acp_service_state\{service="cdb",state="running"\} 1$/m);
  t.regex(text, /^acp_node_info\{cluster="lab",node="n1",incarnation="\d+"\} 1$/m);
});

/** A WebSocket client speaking the wire protocol: one frame per binary message. */
async function wsClient(t: ExecutionContext, node: Node, origin?: string): Promise<{ send(envelope: Envelope): void; next(match: (envelope: Envelope) => boolean): Promise<Envelope>; closed: Promise<number> }> {
  const socket = new WebSocket(`ws://127.0.0.1:${node.port}/ws`, origin ? { origin } : {});
  t.teardown(() => socket.terminate());
  const decoder = new FrameDecoder();
  const frames: Envelope[] = [];
  const waiters = new Set<() => void>();
  socket.on('message', (data: Buffer) => {
    frames.push(...decoder.push(Buffer.from(data)));
    for (const waiter of [...waiters]) waiter();
  });
  const closed = new Promise<number>((resolve) => socket.on('close', (closeCode) => resolve(closeCode)));
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
    socket.once('unexpected-response', (_request, response) => reject(new Error(`HTTP ${response.statusCode}`)));
  }).catch(() => undefined);
  return {
    send: (envelope) => socket.send(encodeFrame(envelope)),
    next: (match) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no such frame within 10 s')), 10_000);
        const look = () => {
          const found = frames.find(match);
          if (!found) return;
          clearTimeout(timer);
          waiters.delete(look);
          resolve(found);
        };
        waiters.add(look);
        look();
      }),
    closed,
  };
}

test('/ws speaks the wire protocol with the token as principal: an auditor asks status, its system.start is refused; a page from another origin is refused', async (t) => {
  const node = await boot(t);
  const ws = await wsClient(t, node, node.base);
  ws.send({ v: 1, k: 'hello', body: { cluster: 'lab', token: node.auditor, proto: 1 } });
  t.like((await ws.next((envelope) => envelope.k === 'hello')).body, { cluster: 'lab', node: 'n1', token: { role: 'auditor' } });
  ws.send({ v: 1, k: 'ask', id: 1, to: 'acp://lab/n1/framework', body: { type: 'status' }, t: 5000 });
  t.like((await ws.next((envelope) => envelope.id === 1)).body, { type: 'status', node: 'n1' });
  ws.send({ v: 1, k: 'ask', id: 2, to: 'acp://lab/n1/hypervisor', body: { type: 'system.start', id: 'dev1' }, t: 5000 });
  const refused = await ws.next((envelope) => envelope.id === 2);
  t.is(refused.k, 'error');
  t.is(refused.err?.code, 'ACP_ERR_AUTH_FORBIDDEN');

  const foreign = await wsClient(t, node, 'http://evil.example');
  t.is(await foreign.closed, 4403);
  const anonymous = await wsClient(t, node, node.base);
  anonymous.send({ v: 1, k: 'hello', body: { cluster: 'lab', token: 'acp_nope', proto: 1 } });
  t.is((await anonymous.next((envelope) => envelope.k === 'error')).err?.code, 'ACP_ERR_AUTH_BAD_TOKEN');
});

test("sessions: acp ui's one-time link becomes an HttpOnly, SameSite=Strict cookie; a token login as auditor is refused a start; /ws takes the session without a hello until it is revoked", async (t) => {
  const node = await boot(t);
  const admin = node.admin;
  const link = (await admin.ask<Message & { url: string }>('webapi', { type: 'webapi.login-link' })).url;
  const first = await fetch(link, { redirect: 'manual' });
  t.is(first.status, 303);
  const cookie = first.headers.get('set-cookie') ?? '';
  t.regex(cookie, /^acp_session=[^;]+;.*HttpOnly/);
  t.regex(cookie, /SameSite=Strict/);
  const again = await fetch(link, { redirect: 'manual' });
  t.is(again.status, 401, 'a login link works once');
  // A browser that opens a used link gets a page saying so, not the envelope's JSON.
  const page = await fetch(link, { redirect: 'manual', headers: { accept: 'text/html,application/xhtml+xml' } });
  t.is(page.status, 401);
  t.regex(page.headers.get('content-type') ?? '', /^text\/html/);
  t.regex(await page.text(), /this login link is unknown, used or expired.*ACP_ERR_AUTH_BAD_TOKEN.*<a href="\/">Sign in with an API token instead<\/a>/s);
  const session = cookie.split(';')[0]!;
  const whoami = await fetch(`${node.base}/api/v1/whoami`, { headers: { cookie: session } });
  t.like(await whoami.json(), { principal: 'operator', role: 'admin' });

  const login = await fetch(`${node.base}/api/v1/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: node.auditor }) });
  t.like(await login.json(), { role: 'auditor' });
  const auditorCookie = (login.headers.get('set-cookie') ?? '').split(';')[0]!;
  const refused = await fetch(`${node.base}/api/v1/systems/dev1/start`, { method: 'POST', headers: { cookie: auditorCookie } });
  t.is(refused.status, 403);
  // A session opened with a token ends when the token is revoked: it no longer acts, nor is it listed.
  const doomed = await admin.ask<Message & { id: string; secret: string }>('api', { type: 'api.token.create', role: 'operator' });
  const doomedLogin = await fetch(`${node.base}/api/v1/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: doomed.secret }) });
  const doomedCookie = (doomedLogin.headers.get('set-cookie') ?? '').split(';')[0]!;
  t.is((await fetch(`${node.base}/api/v1/whoami`, { headers: { cookie: doomedCookie } })).status, 200);
  await admin.ask('api', { type: 'api.token.remove', id: doomed.id });
  const revokedSession = await fetch(`${node.base}/api/v1/systems/dev1/stop`, { method: 'POST', headers: { cookie: doomedCookie } });
  t.is(revokedSession.status, 401);
  t.regex(JSON.stringify(await revokedSession.json()), /the web session ended with its token: token .* is unknown or was revoked/);
  const listed = await admin.ask<Message & { sessions: { principal: string }[] }>('webapi', { type: 'webapi.sessions' });
  t.false(listed.sessions.some((entry) => entry.principal.includes(doomed.id)), 'the ended session is still listed');

  const socket = new WebSocket(`ws://127.0.0.1:${node.port}/ws`, { headers: { cookie: session }, origin: node.base });
  t.teardown(() => socket.terminate());
  const decoder = new FrameDecoder();
  const frames: Envelope[] = [];
  socket.on('message', (data: Buffer) => frames.push(...decoder.push(Buffer.from(data))));
  await new Promise((resolve) => socket.once('open', resolve));
  socket.send(encodeFrame({ v: 1, k: 'ask', id: 1, to: 'acp://lab/n1/framework', body: { type: 'ping' }, t: 5000 }));
  const pong = await waitFor(() => frames.find((envelope) => envelope.id === 1));
  t.like(pong.body, { type: 'pong' });
  const sessions = await admin.ask<Message & { sessions: { id: string; principal: string }[] }>('webapi', { type: 'webapi.sessions' });
  const mine = sessions.sessions.find((entry) => session.includes(entry.id));
  t.truthy(mine);
  await admin.ask('webapi', { type: 'webapi.session.revoke', id: mine!.id });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.send(encodeFrame({ v: 1, k: 'ask', id: 2, to: 'acp://lab/n1/framework', body: { type: 'ping' }, t: 5000 }));
  const ended = await waitFor(() => frames.find((envelope) => envelope.id === 2 || envelope.k === 'error'));
  t.is(ended.err?.code, 'ACP_ERR_AUTH_BAD_TOKEN');
  await closed;
  const after = await fetch(`${node.base}/api/v1/whoami`, { headers: { cookie: session } });
  t.is(after.status, 401);
});

async function waitFor<T>(find: () => T | undefined, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = find();
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
