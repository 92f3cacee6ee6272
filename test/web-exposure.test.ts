/**
 * The web UI beyond loopback: TLS is required (the operator's certificate, else the node's), and
 * /metrics wants a token from anyone but this machine (webapi.metrics). Served with an operator's
 * certificate, the UI is HTTPS, its session cookie Secure, and /metrics set to 'token' refuses a
 * scrape without one.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import test from 'ava';
import { createCa, createCsr, signCsr } from '../adapters/pki.js';
import { AcpError } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import { isLoopback, metricsOpen, webTls } from '../webapi/exposure.js';
import { allRunning, client, makeHome, startDaemon } from './helpers/node.js';

test('loopback is 127.0.0.0/8, ::1 (also IPv4-mapped) and localhost; /metrics is open to loopback only by default', (t) => {
  for (const address of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1', 'localhost']) t.true(isLoopback(address), address);
  for (const address of ['0.0.0.0', '10.0.0.1', '::', '::ffff:10.0.0.1', '128.0.0.1', undefined]) t.false(isLoopback(address), String(address));
  t.true(metricsOpen('loopback', '127.0.0.1'));
  t.false(metricsOpen('loopback', '192.0.2.7'));
  t.false(metricsOpen('token', '127.0.0.1'));
  t.true(metricsOpen('open', '192.0.2.7'));
});

test('beyond loopback without a certificate the web UI refuses to listen (ACP_ERR_WEB_NEEDS_TLS); on loopback it is plain HTTP', (t) => {
  const none = { cert: '/nonexistent/node.crt', key: '/nonexistent/node.key' };
  const refused = t.throws(() => webTls('0.0.0.0', undefined, none));
  t.is((refused as AcpError).code, 'ACP_ERR_WEB_NEEDS_TLS');
  t.regex(refused!.message, /webapi.*tls|acp init/);
  t.is(webTls('127.0.0.1', undefined, none), undefined);
  const missingFile = t.throws(() => webTls('127.0.0.1', { cert: '/nonexistent/web.crt', key: '/nonexistent/web.key' }, none));
  t.is((missingFile as AcpError).code, 'ACP_ERR_WEB_NEEDS_TLS');
});

function get(port: number, path: string, ca: string, headers: Record<string, string> = {}, method = 'GET', body?: string): Promise<{ status: number; headers: Record<string, unknown>; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method, ca, servername: 'web', headers }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (text += chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, text }));
    });
    req.once('error', reject);
    req.end(body);
  });
}

test("with the operator's certificate the UI is HTTPS: the page, a Secure session cookie; /metrics set to 'token' wants one", async (t) => {
  t.timeout(60_000);
  const home = makeHome(t);
  const ca = await createCa('lab');
  const csr = await createCsr('web');
  const cert = signCsr({ csrPem: csr.csrPem, caCertPem: ca.certPem, caKeyPem: ca.keyPem, node: 'web' });
  writeFileSync(join(home, 'web.crt'), cert);
  writeFileSync(join(home, 'web.key'), csr.keyPem, { mode: 0o600 });
  const config = JSON.parse(readFileSync(join(home, 'config.json'), 'utf8')) as { webapi: Record<string, unknown> };
  config.webapi = { ...config.webapi, tls: { cert: join(home, 'web.crt'), key: join(home, 'web.key') }, metrics: 'token' };
  writeFileSync(join(home, 'config.json'), JSON.stringify(config));
  await allRunning(await startDaemon(t, home));
  const admin = await client(t, home);
  const url = new URL((await admin.ask<Message & { url: string }>('webapi', { type: 'webapi.address' })).url);
  t.is(url.protocol, 'https:');
  const port = Number(url.port);
  const page = await get(port, '/', ca.certPem);
  t.is(page.status, 200);
  t.regex(page.text, /<div id="app">/);
  const scrape = await get(port, '/metrics', ca.certPem);
  t.is(scrape.status, 401);
  t.regex(scrape.text, /ACP_ERR_AUTH_BAD_TOKEN/);
  const auditor = (await admin.ask<Message & { secret: string }>('api', { type: 'api.token.create', role: 'auditor' })).secret;
  const withToken = await get(port, '/metrics', ca.certPem, { authorization: `Bearer ${auditor}` });
  t.is(withToken.status, 200);
  t.regex(withToken.text, /^# HELP acp_/m);
  const login = await get(port, '/api/v1/login', ca.certPem, { 'content-type': 'application/json' }, 'POST', JSON.stringify({ token: auditor }));
  t.is(login.status, 200);
  const cookie = String((login.headers['set-cookie'] as string[] | undefined)?.[0] ?? '');
  t.regex(cookie, /HttpOnly/);
  t.regex(cookie, /Secure/);
  t.regex(cookie, /SameSite=Strict/);
});
