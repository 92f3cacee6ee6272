/**
 * The web page in a real browser (playwright-core driving Debian's chromium): logged in by
 * `acp ui`'s link it shows the node's services live; an auditor signed in with a token sees its
 * role, and a request the role does not allow is refused. Screenshots go to test-results/.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ExecutionContext } from 'ava';
import { chromium, type Browser } from 'playwright-core';
import type { Message } from '../runtime/messages.js';
import { allRunning, client, makeHome, startDaemon } from './helpers/node.js';
import { runsWhen } from './helpers/requires.js';

const CHROMIUM = process.env.ACP_CHROMIUM ?? '/usr/bin/chromium';
const missing = existsSync(CHROMIUM) ? undefined : `${CHROMIUM} is not installed (apt-get install chromium)`;
const artifacts = fileURLToPath(new URL('../../test-results', import.meta.url));

async function browser(t: ExecutionContext): Promise<Browser> {
  // As root in a container: no sandbox; and no background traffic to a network that is not there.
  const launched = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  t.teardown(() => launched.close());
  return launched;
}

runsWhen(missing)(`the page, in Chromium: acp ui's link logs in and the services show live; an auditor sees its role and is refused a start${missing ? ` (skipped: ${missing})` : ''}`, async (t) => {
  t.timeout(120_000);
  const home = makeHome(t);
  await allRunning(await startDaemon(t, home));
  const admin = await client(t, home);
  await admin.ask('cdb', { type: 'cdb.put', key: 'object/system/dev1', value: { name: 'dev1', driver: 'sim' } });
  const link = (await admin.ask<Message & { url: string }>('webapi', { type: 'webapi.login-link' })).url;
  const auditor = (await admin.ask<Message & { secret: string }>('api', { type: 'api.token.create', role: 'auditor' })).secret;
  mkdirSync(artifacts, { recursive: true });

  const chrome = await browser(t);
  const operatorPage = await (await chrome.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  await operatorPage.goto(link);
  await operatorPage.waitForSelector('#services tr');
  t.regex((await operatorPage.textContent('#who')) ?? '', /signed in as operator \(admin\)/);
  const rows = await operatorPage.$$eval('#services tr', (trs) => trs.map((tr) => tr.textContent ?? ''));
  t.true(rows.some((row) => /^cdbrunning/.test(row)), rows.join(' | '));
  // Live: the uptime in the summary moves without a reload.
  const before = await operatorPage.textContent('#summary');
  await operatorPage.waitForFunction((earlier) => (globalThis as unknown as { document: { getElementById(id: string): { textContent: string | null } | null } }).document.getElementById('summary')?.textContent !== earlier, before, { timeout: 5000 });
  await operatorPage.screenshot({ path: join(artifacts, 'status-operator.png') });

  const auditorPage = await (await chrome.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  await auditorPage.goto(new URL(link).origin + '/');
  await auditorPage.fill('#token', auditor);
  await auditorPage.click('#login button');
  await auditorPage.waitForSelector('#services tr');
  t.regex((await auditorPage.textContent('#who')) ?? '', /\(auditor\)/);
  const forced = await auditorPage.evaluate(async () => {
    const response = await fetch('/api/v1/systems/dev1/start', { method: 'POST' });
    return { status: response.status, body: (await response.json()) as { error?: { code?: string } } };
  });
  t.is(forced.status, 403);
  t.is(forced.body.error?.code, 'ACP_ERR_AUTH_FORBIDDEN');
  await auditorPage.screenshot({ path: join(artifacts, 'status-auditor.png') });
});
