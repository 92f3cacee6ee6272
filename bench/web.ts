/**
 * bench/web: REST requests per second through the web API (fastify, bearer token, the relay with
 * its authority check, the CDB) beside a bare node:http handler returning the same JSON, both
 * driven by autocannon at the same concurrency in the same run; and the fan-out of CDB events to
 * 100 WebSocket clients on /ws (each with a token hello and a cdb.watch, as the UI's page has)
 * beside the rate at which one subscriber on the API socket takes the same events.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import WebSocket from 'ws';
import { connect } from '../node/client.js';
import type { AcpClient } from '../runtime/client.js';
import { encodeFrame, FrameDecoder, PROTOCOL_VERSION } from '../runtime/codec.js';
import { Daemon } from '../node/daemon.js';
import type { Message } from '../runtime/messages.js';
import type { Comparison } from './measure.js';

const CONNECTIONS = 32;
const SECONDS = 5;
const FAN_CLIENTS = 100;
const FAN_EVENTS = 2000;
const BATCH = 200;
const FAN_TIMEOUT_MS = 120_000;

/** Writes `count` records under `prefix` in batches; resolves when the writes are committed. */
async function write(client: AcpClient, prefix: string, count: number): Promise<void> {
  for (let offset = 0; offset < count; offset += BATCH) {
    const ops = Array.from({ length: Math.min(BATCH, count - offset) }, (_, index) => ({ op: 'put', key: `${prefix}${offset + index}`, value: { name: `${prefix.split('/').at(-1)}${offset + index}`, driver: 'sim' } }));
    await client.ask('cdb', { type: 'cdb.batch', ops });
  }
}

/** Resolves once `done()` says so, polling every 10 ms; rejects after FAN_TIMEOUT_MS. */
async function until(done: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + FAN_TIMEOUT_MS;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`bench/web: ${what} did not happen within ${FAN_TIMEOUT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** One browser-like client on /ws: token hello, a cdb.watch on `prefix`, counting the change events. */
async function wsWatcher(url: string, cluster: string, token: string, prefix: string): Promise<{ events: () => number; close(): void }> {
  const socket = new WebSocket(url.replace(/^http/, 'ws') + 'ws');
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
  });
  const decoder = new FrameDecoder();
  let events = 0;
  let watching = false;
  socket.on('message', (data: Buffer) => {
    for (const envelope of decoder.push(data)) {
      const body = envelope.body as { type?: string; records?: unknown[] } | undefined;
      if (envelope.k === 'event' && body?.type === 'cdb.events') events += body.records?.length ?? 0;
      if (envelope.k === 'event' && body?.type === 'cdb.watching') watching = true;
      if (envelope.k === 'error') throw new Error(`bench/web: /ws refused: ${envelope.err?.message ?? 'an error'}`);
    }
  });
  socket.send(encodeFrame({ v: PROTOCOL_VERSION, k: 'hello', body: { cluster, token, proto: PROTOCOL_VERSION } }));
  socket.send(encodeFrame({ v: PROTOCOL_VERSION, k: 'watch', id: 1, to: `acp://${cluster}/n1/cdb`, body: { type: 'cdb.watch', prefix } }));
  await until(() => watching, 'a /ws watch');
  return { events: () => events, close: () => socket.close() };
}

/** Events per second to 100 /ws clients (all of them counted) beside one API-socket subscriber. */
async function fanOut(client: AcpClient, url: string, token: string): Promise<Comparison> {
  // The baseline: one subscriber on the API socket, the same number of events.
  let seen = 0;
  const watch = client.subscribe('cdb', { type: 'cdb.watch', prefix: 'object/system/base' }, (event) => {
    if (event.type === 'cdb.events') seen += (event.records as unknown[]).length;
  });
  await new Promise((resolve) => setTimeout(resolve, 200));
  let started = Date.now();
  await write(client, 'object/system/base', FAN_EVENTS);
  await until(() => seen >= FAN_EVENTS, 'the API subscriber taking every event');
  const baseline = FAN_EVENTS / ((Date.now() - started) / 1000);
  watch.cancel();

  const watchers = await Promise.all(Array.from({ length: FAN_CLIENTS }, () => wsWatcher(url, 'bench', token, 'object/system/fan')));
  try {
    started = Date.now();
    await write(client, 'object/system/fan', FAN_EVENTS);
    await until(() => watchers.every((watcher) => watcher.events() >= FAN_EVENTS), `${FAN_CLIENTS} /ws clients taking every event`);
    const delivered = (FAN_CLIENTS * FAN_EVENTS) / ((Date.now() - started) / 1000);
    return {
      name: `WebSocket fan-out: ${FAN_EVENTS} CDB changes to ${FAN_CLIENTS} /ws clients (events delivered, all clients)`,
      opsPerSecond: delivered,
      baseline: 'one API-socket subscriber taking the same changes',
      baselineOpsPerSecond: baseline,
    };
  } finally {
    for (const watcher of watchers) watcher.close();
  }
}

async function requestsPerSecond(url: string, headers: Record<string, string>): Promise<number> {
  const result = await autocannon({ url, connections: CONNECTIONS, duration: SECONDS, headers });
  if (result.non2xx > 0 || result.errors > 0) throw new Error(`${url}: ${result.non2xx} non-2xx answers and ${result.errors} errors`);
  return result.requests.average;
}

export async function webBenchmarks(): Promise<Comparison[]> {
  const home = mkdtempSync(join(tmpdir(), 'acp-bench-web-'));
  writeFileSync(join(home, 'config.json'), JSON.stringify({ cluster: 'bench', node: 'n1', webapi: { port: 0 }, statsMs: 0 }));
  const daemon = await Daemon.start({ home, logLevel: 'silent' });
  try {
    while (daemon.status().booting || daemon.status().services.some((service) => service.state !== 'running')) await new Promise((resolve) => setTimeout(resolve, 50));
    const client = await connect({ home });
    const token = (await client.ask<Message & { secret: string }>('api', { type: 'api.token.create', role: 'auditor' })).secret;
    for (let i = 0; i < 20; i += 1) await client.ask('cdb', { type: 'cdb.put', key: `object/system/s${i}`, value: { name: `s${i}`, driver: 'sim' } });
    const url = (await client.ask<Message & { url: string }>('webapi', { type: 'webapi.address' })).url;
    const body = JSON.stringify(await (await fetch(`${url}api/v1/systems`, { headers: { authorization: `Bearer ${token}` } })).json());

    const bare = createServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(body);
    });
    await new Promise<void>((resolve) => bare.listen(0, '127.0.0.1', resolve));
    const bareUrl = `http://127.0.0.1:${(bare.address() as AddressInfo).port}/`;
    const rest = await requestsPerSecond(`${url}api/v1/systems`, { authorization: `Bearer ${token}` });
    const baseline = await requestsPerSecond(bareUrl, {});
    await new Promise<void>((resolve) => bare.close(() => resolve()));
    // After the REST runs: the fan-out adds its records under object/system/.
    const fan = await fanOut(client, url, token);
    await client.close();
    return [{ name: `REST GET /api/v1/systems (20 systems, auditor token), ${CONNECTIONS} connections`, opsPerSecond: rest, baseline: 'a bare node:http handler returning the same JSON', baselineOpsPerSecond: baseline }, fan];
  } finally {
    await daemon.stop('bench over');
    rmSync(home, { recursive: true, force: true });
  }
}
