import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import fastifyCookie from '@fastify/cookie';
import fastifyStatic from '@fastify/static';
import fastifyWebsocket from '@fastify/websocket';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { createWebSocketStream } from 'ws';
import { z } from 'zod';
import { ApiSession } from '../actors/api/session.js';
import type { SessionLimits } from '../actors/api/session-options.js';
import { newSystemSchema, systemObjectSchema } from '../actors/model.js';
import { requireSystemReferences } from '../actors/system-references.js';
import { attachFrames } from '../adapters/frame-listener.js';
import type { CborLimits } from '../runtime/cbor-guard.js';
import { AcpError, errorMessage } from '../runtime/errors.js';
import type { Logger } from '../runtime/logger.js';
import type { Message } from '../runtime/messages.js';
import { NAME_MAX, NAME_PATTERN, NAME_RULE } from '../runtime/path.js';
import { formatPrincipal, type Principal } from '../runtime/principal.js';
import type { NodeStatus } from '../runtime/services.js';
import type { GatewaySystem } from '../runtime/services.js';
import { principalOf, SESSION_COOKIE, type WebAuth } from './auth.js';
import { registerDisplay } from './display.js';
import type { DisplayRelay } from './display-relay.js';
import { metricsOpen, type WebTls } from './exposure.js';
import type { NodeMetrics } from './metrics.js';
import { BODY_LIMIT, frameworkErrors, MAX_PARAM_LENGTH, parsePart, registerRefusals, sendRefusal, sendRefusalPage } from './refusals.js';

export interface WebServerOptions {
  system: GatewaySystem;
  /** The node's home (guests' run dirs, for their displays). */
  home: string;
  /** Displays of guests on other nodes, through the webapi actors. */
  relay: DisplayRelay;
  auth: WebAuth;
  metrics: NodeMetrics;
  status(): NodeStatus;
  log: Logger;
  /** The wire limits of the API socket, applied to /ws as well. */
  wire: { maxFrameBytes: number; maxHelloFrameBytes: number } & Partial<CborLimits>;
  limits: SessionLimits;
  helloTimeoutMs: number;
  countRefusal(): void;
  /** TLS for the listener (beyond loopback it is required: exposure.ts). */
  tls?: WebTls;
  /** Who may read /metrics without a token. */
  metricsAccess: 'loopback' | 'token' | 'open';
  /** Web sessions, kept by the webapi actor (its mailbox changes them). */
  sessions: {
    redeem(code: string): Promise<{ id: string; expiresMs: number }>;
    open(principal: Principal): Promise<{ id: string; expiresMs: number }>;
    revoke(id: string): Promise<void>;
  };
}

const ACTIONS = ['start', 'stop', 'pause', 'resume', 'restart', 'reset'] as const;
/** An id in a path: one too long is said to be, with the rule, before its pattern is tried. */
const nameParam = (what: string, pattern: string) =>
  z
    .string()
    .max(NAME_MAX, { error: (issue) => `is too long (${String(issue.input).length} characters): ${what} ids are names, and ${NAME_RULE}` })
    .regex(NAME_PATTERN, pattern);
const idParam = z.strictObject({ id: nameParam('system', 'must be a system id: [a-z0-9][a-z0-9._-]{0,62}') });
const actionParam = idParam.extend({ action: z.enum(ACTIONS) });
const alarmParam = z.strictObject({ id: nameParam('alarm', 'must be an alarm id as listed by GET /api/v1/alarms') });
const ASK_MS = 30_000;
/** The web UI (webapi/ui), built by Vite (`npm run build`) into dist/webapi/ui. */
export const UI_ROOT = fileURLToPath(new URL('./ui/', import.meta.url));

interface RecordView {
  key: string;
  value: unknown;
  version: string;
}

function roleOf(principal: Principal): string {
  if (principal.kind === 'token') return principal.role;
  return principal.kind === 'operator' ? 'admin' : principal.kind;
}

/**
 * The web API on fastify: kept routing, request parsing, WebSocket upgrade and error handling
 * instead of the hand-written router. REST under /api/v1 with bearer tokens, /ws speaking the wire
 * protocol, /metrics for Prometheus. Every request reaches the actors as its principal, so the
 * relay's authority checks decide what it may do, exactly as on the API socket.
 */
export async function createWebServer(options: WebServerOptions): Promise<FastifyInstance> {
  const { system } = options;
  // With TLS an https server (the same routes); fastify's types tell the two apart, the routes do not.
  const base = { logger: false, bodyLimit: BODY_LIMIT, routerOptions: { maxParamLength: MAX_PARAM_LENGTH }, frameworkErrors };
  const app = (options.tls ? Fastify({ ...base, https: { cert: options.tls.cert, key: options.tls.key } }) : Fastify(base)) as unknown as FastifyInstance;
  // What fastify refuses by itself (a path not in resolved form, a body it will not parse, an unknown
  // route) is answered in the API's own shape too, saying what is wrong: before any plugin, so all inherit it.
  registerRefusals(app, options.log);
  await app.register(fastifyCookie);
  await app.register(fastifyWebsocket, { options: { maxPayload: options.wire.maxFrameBytes + 4 } });
  // The session cookie: not readable by scripts, never sent by another site's page.
  const setSession = (reply: FastifyReply, session: { id: string; expiresMs: number }) =>
    reply.setCookie(SESSION_COOKIE, session.id, { httpOnly: true, sameSite: 'strict', secure: options.tls !== undefined, path: '/', expires: new Date(session.expiresMs) });
  const cluster = system.identity.cluster;
  const self = system.identity.node;
  const at = (node: string, service: string) => ({ cluster, node, segments: [service] });
  const ask = (principal: Principal, node: string, service: string, message: Message) =>
    system.ask(at(node, service), message, { sender: principal, external: true, timeoutMs: ASK_MS });
  const list = async (principal: Principal, prefix: string): Promise<RecordView[]> => {
    const reply = await ask(principal, self, 'cdb', { type: 'cdb.list', prefix, limit: 10_000 });
    return (reply as Message & { records: RecordView[] }).records;
  };
  /** Where a system is placed, else where it does not stand stopped, else this node. */
  const nodeOf = async (principal: Principal, id: string): Promise<string> => {
    const spec = (await ask(principal, self, 'cdb', { type: 'cdb.get', key: `object/system/${id}` })) as Message & { record: RecordView };
    const placed = (spec.record.value as { node?: string }).node;
    if (placed) return placed;
    const live = (await list(principal, `meta/system/${id}@`)).find((record) => !['stopped', 'defined'].includes(String((record.value as { state?: unknown }).state)));
    return live ? String((live.value as { node: string }).node) : self;
  };
  const handle = (work: (principal: Principal, request: FastifyRequest) => Promise<unknown>) => async (request: FastifyRequest, reply: FastifyReply) => {
    try {
      return await work(principalOf(request, options.auth), request);
    } catch (error) {
      return sendRefusal(reply, error);
    }
  };

  // `acp ui` prints a link with a one-time code: it becomes a session cookie, then the page.
  app.get('/login', async (request, reply) => {
    try {
      const { code } = parsePart(z.strictObject({ code: z.string().min(16).max(100) }), request.query, 'query');
      setSession(reply, await options.sessions.redeem(code));
      return reply.redirect('/', 303);
    } catch (error) {
      return sendRefusalPage(request, reply, error, { href: '/', label: 'Sign in with an API token instead' });
    }
  });
  app.post('/api/v1/login', async (request, reply) => {
    try {
      const { token } = parsePart(z.strictObject({ token: z.string().min(1).max(200) }), request.body, 'body');
      const record = options.auth.tokens.verify(token);
      const principal: Principal = { kind: 'token', id: record.id, role: record.role };
      setSession(reply, await options.sessions.open(principal));
      return { type: 'logged-in', role: record.role };
    } catch (error) {
      return sendRefusal(reply, error);
    }
  });
  app.post('/api/v1/logout', async (request, reply) => {
    const id = request.cookies[SESSION_COOKIE];
    if (id) await options.sessions.revoke(id);
    return reply.clearCookie(SESSION_COOKIE, { path: '/' }).send({ type: 'logged-out' });
  });
  app.get('/api/v1/whoami', handle(async (principal) => ({ type: 'whoami', principal: formatPrincipal(principal), role: roleOf(principal) })));
  // The UI: hashed assets cached for good, the page itself never (it names the current assets).
  if (existsSync(UI_ROOT)) {
    await app.register(fastifyStatic, {
      root: UI_ROOT,
      index: 'index.html',
      cacheControl: false,
      setHeaders: (response, path) => response.header('cache-control', path.endsWith('.html') ? 'no-store' : 'public, max-age=31536000, immutable'),
    });
  } else {
    app.get('/', async (_request, reply) => reply.code(503).type('text/plain; charset=utf-8').send(`the web UI is not built (${UI_ROOT} is missing): run npm run build\n`));
  }
  app.get('/api/v1/status', handle((principal) => ask(principal, self, 'framework', { type: 'status' })));
  app.get('/api/v1/nodes', handle((principal) => ask(principal, self, 'cdb', { type: 'cdb.nodes' })));
  app.get(
    '/api/v1/systems',
    handle(async (principal) => {
      const [specs, metas] = await Promise.all([list(principal, 'object/system/'), list(principal, 'meta/system/')]);
      return {
        systems: specs.map((record) => {
          const id = record.key.slice('object/system/'.length);
          return { id, spec: record.value, states: metas.filter((meta) => meta.key.startsWith(`meta/system/${id}@`)).map((meta) => meta.value) };
        }),
      };
    }),
  );
  app.get(
    '/api/v1/systems/:id',
    handle(async (principal, request) => {
      const { id } = parsePart(idParam, request.params, 'path');
      const spec = (await ask(principal, self, 'cdb', { type: 'cdb.get', key: `object/system/${id}` })) as Message & { record: RecordView };
      return { id, spec: spec.record.value, version: spec.record.version, states: (await list(principal, `meta/system/${id}@`)).map((meta) => meta.value) };
    }),
  );
  app.post(
    '/api/v1/systems',
    handle(async (principal, request) => {
      const spec = parsePart(newSystemSchema, request.body, 'body');
      await requireSystemReferences((message) => ask(principal, self, 'cdb', message), spec, self);
      return ask(principal, self, 'cdb', { type: 'cdb.cas', key: `object/system/${spec.name}`, value: spec, expect: null }).catch((error: unknown) => {
        if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_CONFLICT') throw new AcpError('ACP_ERR_CDB_CONFLICT', `system '${spec.name}' exists already; delete it first, or pick another name`);
        throw error;
      });
    }),
  );
  app.post(
    '/api/v1/systems/:id/:action',
    handle(async (principal, request) => {
      const { id, action } = parsePart(actionParam, request.params, 'path');
      const body: unknown = request.body ?? {};
      if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new AcpError('ACP_ERR_WEB_BAD_BODY', `the body of ${action} is a JSON object of its options (e.g. {"force": true} for stop), or none; not ${Array.isArray(body) ? 'an array' : typeof body}`);
      const extra = body as Record<string, unknown>;
      return ask(principal, await nodeOf(principal, id), 'hypervisor', { ...extra, type: `system.${action}`, id });
    }),
  );
  /** Each record under `object/<kind>/` with what every node reports of it (`meta/` or `stats/`). */
  const withReports = async (principal: Principal, kind: string, reports: string) => {
    const [objects, seen] = await Promise.all([list(principal, `object/${kind}/`), list(principal, `${reports}/${kind}/`)]);
    return objects.map((record) => {
      const id = record.key.slice(`object/${kind}/`.length);
      return { id, spec: record.value, nodes: Object.fromEntries(seen.filter((r) => r.key.startsWith(`${reports}/${kind}/${id}@`)).map((r) => [r.key.slice(r.key.indexOf('@') + 1), r.value])) };
    });
  };
  app.get('/api/v1/networks', handle(async (principal) => ({ networks: await withReports(principal, 'network', 'meta') })));
  app.get(
    '/api/v1/storage',
    handle(async (principal) => {
      const [pools, volumes] = await Promise.all([withReports(principal, 'storage/pool', 'stats'), list(principal, 'object/storage/volume/')]);
      return { pools, volumes: volumes.map((record) => ({ id: record.key.slice('object/storage/volume/'.length), spec: record.value })) };
    }),
  );
  app.get(
    '/api/v1/alarms',
    handle(async (principal, request) => {
      const { open } = parsePart(z.strictObject({ open: z.enum(['true', 'false']).optional() }), request.query, 'query');
      const alarms = (await list(principal, 'object/alarm/')).map((record) => record.value as { open?: boolean });
      return { alarms: open === undefined ? alarms : alarms.filter((alarm) => alarm.open === (open === 'true')) };
    }),
  );
  app.post(
    '/api/v1/alarms/:id/ack',
    handle(async (principal, request) => {
      const { id } = parsePart(alarmParam, request.params, 'path');
      return system.ask({ cluster, node: '@primary', segments: ['monitor'] }, { type: 'monitor.alarm.ack', id }, { sender: principal, external: true, timeoutMs: ASK_MS });
    }),
  );
  app.get('/api/v1/health', handle((principal) => ask(principal, self, 'monitor', { type: 'monitor.health' })));
  app.get(
    '/api/v1/cluster',
    handle(async (principal) => {
      const [monitor, health, nodes] = await Promise.all([
        ask(principal, self, 'monitor', { type: 'monitor.status' }) as Promise<Message & { primary: string | null; term: number; openAlarms: unknown[] }>,
        ask(principal, self, 'monitor', { type: 'monitor.health' }) as Promise<Message & { score: number }>,
        ask(principal, self, 'cdb', { type: 'cdb.nodes' }) as Promise<Message & { nodes: unknown[] }>,
      ]);
      return { cluster, primary: monitor.primary, term: monitor.term, health: health.score, openAlarms: monitor.openAlarms, nodes: nodes.nodes };
    }),
  );
  app.get('/api/v1/openapi.json', async () => openApi());
  app.get('/metrics', async (request, reply) => {
    try {
      // Off loopback (or always, as configured) the scraper shows a token; any role may read.
      if (!metricsOpen(options.metricsAccess, request.socket.remoteAddress)) principalOf(request, options.auth);
      return reply.type(options.metrics.contentType).send(await options.metrics.text());
    } catch (error) {
      return sendRefusal(reply, error);
    }
  });

  registerDisplay(app, { auth: options.auth, log: options.log, node: self, home: options.home, relay: options.relay, ask, nodeOf, countRefusal: options.countRefusal });

  // The wire protocol over a WebSocket: the same hello (API key or token), frames, limits and checks.
  let nextId = 0;
  app.get('/ws', { websocket: true }, (socket, request) => {
    const host = request.headers.host;
    const origin = request.headers.origin;
    if (origin !== undefined && host !== undefined && origin !== `http://${host}` && origin !== `https://${host}`) {
      options.log.warn({ origin, host }, 'WebSocket refused: a page from another origin');
      options.countRefusal();
      socket.close(4403, 'cross-origin WebSocket refused');
      return;
    }
    // A logged-in browser is its session's principal at once; anyone else says hello first.
    const cookie = request.cookies[SESSION_COOKIE];
    let principal: Principal | undefined;
    try {
      principal = cookie ? options.auth.session(cookie) : undefined;
    } catch {
      principal = undefined;
    }
    const stream = createWebSocketStream(socket);
    stream.on('error', (error) => options.log.debug({ err: errorMessage(error) }, 'WebSocket stream error'));
    attachFrames(stream, `w${++nextId}`, { ...options.wire, ...(principal ? { maxHelloFrameBytes: options.wire.maxFrameBytes } : {}), log: options.log }, (connection) =>
      new ApiSession(connection, {
        system,
        apiKey: options.auth.apiKey(),
        tokens: options.auth.tokens,
        limits: options.limits,
        helloTimeoutMs: options.helloTimeoutMs,
        log: options.log,
        onRefused: () => options.countRefusal(),
        ...(principal && cookie ? { principal, greeted: true, stillValid: () => options.auth.session(cookie) } : {}),
      }),
    );
  });
  return app;
}

/** The REST routes and their request bodies, from the same schemas the server validates with. */
function openApi(): unknown {
  const error = { type: 'object', properties: { error: { type: 'object', properties: { code: { type: 'string' }, kind: { type: 'string' }, message: { type: 'string' } } } } };
  const responses = { '200': { description: 'done' }, default: { description: 'refused', content: { 'application/json': { schema: error } } } };
  const id = { name: 'id', in: 'path', required: true, schema: { type: 'string', pattern: NAME_PATTERN.source } };
  return {
    openapi: '3.1.0',
    info: { title: 'ACP', version: '1' },
    components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    security: [{ bearer: [] }],
    paths: {
      '/api/v1/status': { get: { summary: "This node's status", responses } },
      '/api/v1/nodes': { get: { summary: 'Cluster membership', responses } },
      '/api/v1/systems': {
        get: { summary: 'Systems with their state on each node', responses },
        post: { summary: 'Create a system', requestBody: { required: true, content: { 'application/json': { schema: z.toJSONSchema(systemObjectSchema, { io: 'input' }) } } }, responses },
      },
      '/api/v1/systems/{id}': { get: { summary: 'One system', parameters: [id], responses } },
      ...Object.fromEntries(ACTIONS.map((action) => [`/api/v1/systems/{id}/${action}`, { post: { summary: `${action} a system`, parameters: [id], responses } }])),
      '/api/v1/networks': { get: { summary: 'Networks with what each node reports of them', responses } },
      '/api/v1/storage': { get: { summary: 'Storage pools (with each node\'s figures) and volumes', responses } },
      '/api/v1/alarms': {
        get: { summary: 'Alarms, open and cleared', parameters: [{ name: 'open', in: 'query', required: false, schema: { type: 'string', enum: ['true', 'false'] } }], responses },
      },
      '/api/v1/alarms/{id}/ack': { post: { summary: 'Acknowledge an open alarm (sent to the primary monitor)', parameters: [id], responses } },
      '/api/v1/health': { get: { summary: "The cluster's health score and what lowers it", responses } },
      '/api/v1/cluster': { get: { summary: 'Cluster status: primary, term, health score, open alarms, members', responses } },
      '/metrics': { get: { summary: 'Prometheus metrics', security: [], responses } },
    },
  };
}
