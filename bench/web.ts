/**
 * bench/web: REST requests per second through the web API (fastify, bearer token, the relay with
 * its authority check, the CDB) beside a bare node:http handler returning the same JSON, both
 * driven by autocannon at the same concurrency in the same run.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import { connect } from '../node/client.js';
import { Daemon } from '../node/daemon.js';
import type { Message } from '../runtime/messages.js';
import type { Comparison } from './measure.js';

const CONNECTIONS = 32;
const SECONDS = 5;

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
    await client.close();

    const bare = createServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(body);
    });
    await new Promise<void>((resolve) => bare.listen(0, '127.0.0.1', resolve));
    const bareUrl = `http://127.0.0.1:${(bare.address() as AddressInfo).port}/`;
    const rest = await requestsPerSecond(`${url}api/v1/systems`, { authorization: `Bearer ${token}` });
    const baseline = await requestsPerSecond(bareUrl, {});
    await new Promise<void>((resolve) => bare.close(() => resolve()));
    return [{ name: `REST GET /api/v1/systems (20 systems, auditor token), ${CONNECTIONS} connections`, opsPerSecond: rest, baseline: 'a bare node:http handler returning the same JSON', baselineOpsPerSecond: baseline }];
  } finally {
    await daemon.stop('bench over');
    rmSync(home, { recursive: true, force: true });
  }
}
