/**
 * The web UI in a real browser (playwright-core driving Debian's chromium): an operator logs in
 * with a token, the tree shows the node and a sim system, Start in the UI changes its state live
 * (pushed over /ws, no reload), the node's charts take new points as stats arrive; `acp ui`'s link
 * logs in as the operator; an auditor's buttons are disabled and a forced request is refused on
 * REST and on /ws. Screenshots of the main views go to test-results/.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import type { Message } from '../runtime/messages.js';
import { artifacts, browser, browserMissing, tokenPage, typeInto } from './helpers/browser.js';
import { allRunning, client, eventually, makeHome, startDaemon } from './helpers/node.js';
import { runsWhen } from './helpers/requires.js';

const missing = browserMissing();
const points = (page: Page) => page.$eval('figure.chart[data-chart="CPU"]', (figure) => Number((figure as unknown as { dataset: { points?: string } }).dataset.points ?? 0));

runsWhen(missing)(`the UI in Chromium: token login, the tree, Start pushed live, live charts, acp ui's link; an auditor is disabled and refused; a CDB restart is watched through; sign-out stops the page${missing ? ` (skipped: ${missing})` : ''}`, async (t) => {
  t.timeout(180_000);
  const home = makeHome(t, { statsMs: 1000 });
  // With faults: the test crashes the CDB under the page.
  await allRunning(await startDaemon(t, home, { faults: true }));
  const admin = await client(t, home);
  await admin.ask('cdb', { type: 'cdb.put', key: 'object/system/dev1', value: { name: 'dev1', driver: 'sim' } });
  const origin = new URL((await admin.ask<Message & { url: string }>('webapi', { type: 'webapi.address' })).url).origin;
  const operator = (await admin.ask<Message & { secret: string }>('api', { type: 'api.token.create', role: 'operator' })).secret;
  const auditor = (await admin.ask<Message & { secret: string }>('api', { type: 'api.token.create', role: 'auditor' })).secret;
  mkdirSync(artifacts, { recursive: true });
  const chrome = await browser(t);

  // Logged out, the page asks for a token.
  const page = await (await chrome.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  await page.goto(`${origin}/`);
  await page.waitForSelector('#token');
  await page.fill('#token', 'acp_not-a-token');
  await page.click('#login button[type=submit]');
  await page.waitForSelector('#login-error:not(:empty)');
  t.regex((await page.textContent('#login-error')) ?? '', /ACP_ERR_AUTH/);
  await page.screenshot({ path: join(artifacts, 'login.png') });
  await page.fill('#token', operator);
  await page.click('#login button[type=submit]');
  await page.waitForSelector('body[data-ready=true]');
  t.regex((await page.textContent('#who')) ?? '', /\(operator\)/);

  // The tree: cluster, the node, the sim system under it.
  const node = admin.node.node;
  await page.waitForSelector(`#tree a.node[data-name="${node}"]`);
  await page.waitForSelector('#tree a.system[data-name="dev1"][data-state="defined"], #tree a.system[data-name="dev1"][data-state="stopped"]');
  await page.fill('#search', 'nothing-matches');
  t.is(await page.$('#tree a.system[data-name="dev1"]'), null);
  await page.fill('#search', 'dev');
  await page.waitForSelector('#tree a.system[data-name="dev1"]');
  await page.screenshot({ path: join(artifacts, 'cluster.png') });
  // Stats arrive every second; the tree is not drawn again for them (its links were replaced under the pointer, and clicks lost).
  type Marked = { document: { querySelector(s: string): { marked?: boolean } | null } };
  await page.evaluate(() => ((globalThis as unknown as Marked).document.querySelector('#tree a.system[data-name="dev1"]')!.marked = true));
  await new Promise((resolve) => setTimeout(resolve, 3000));
  t.true(await page.evaluate(() => (globalThis as unknown as Marked).document.querySelector('#tree a.system[data-name="dev1"]')?.marked === true), 'the tree was drawn again with nothing changed');

  // Start from the UI: the state arrives by push, on the same page (no reload: the marker stays).
  await page.click('#tree a.system[data-name="dev1"]');
  await page.waitForSelector('button[data-action="start"]:not([disabled])');
  await page.evaluate(() => ((globalThis as unknown as { marker: number }).marker = 42));
  const clicked = Date.now();
  await page.click('button[data-action="start"]');
  await page.waitForSelector('#tree a.system[data-name="dev1"][data-state="running"]', { timeout: 5000 });
  const latencyMs = Date.now() - clicked;
  t.log(`Start clicked to state shown: ${latencyMs} ms`);
  t.is(await page.evaluate(() => (globalThis as unknown as { marker?: number }).marker), 42, 'the page was not reloaded');
  t.is(await page.textContent('#state'), 'running');
  // One node: nowhere to migrate to, so Migrate is off and says why.
  t.true(await page.isDisabled('button[data-action="migrate"]'));
  t.is(await page.getAttribute('button[data-action="migrate"]', 'title'), 'no other node to migrate to');
  await page.waitForSelector('#tasks .task-status.ok');
  t.regex((await page.textContent('#tasks')) ?? '', /start dev1 done/);
  // A refused action shows the node's error in the task log.
  await page.evaluate(() => {
    const button = (globalThis as unknown as { document: { querySelector(s: string): { disabled: boolean; click(): void } } }).document.querySelector('button[data-action="resume"]');
    button.disabled = false;
    button.click();
  });
  await page.waitForSelector('#tasks .task-status.failed');
  t.regex((await page.textContent('#tasks')) ?? '', /resume dev1 failed ACP_ERR_SYSTEM_BAD_STATE: .*it is running/);
  // The console: the sim guest's log in xterm.js, and a typed line reaches the guest (a sim guest echoes it).
  await page.waitForFunction(() => /ACP-GUEST-READY/.test((globalThis as unknown as { document: { querySelector(s: string): { textContent: string | null } | null } }).document.querySelector('.console .xterm-rows')?.textContent ?? ''), undefined, { timeout: 10_000 });
  await typeInto(page, 'echo typed-in-the-browser');
  await page.screenshot({ path: join(artifacts, 'system-running.png') });

  // Create from the form, then delete it (confirmed): both in the task log, the tree follows.
  await page.fill('#search', '');
  // The tree is redrawn as live changes arrive: a click can land while its link is replaced (seen once in CI,
  // the form never came), so it is clicked again until the form shows.
  for (let attempt = 1; ; attempt += 1) {
    await page.click('#tree a[href="#/create"]');
    const shown = await page.waitForSelector('#create input[name="name"]', { timeout: 5000 }).then(() => true, () => false);
    if (shown) break;
    if (attempt === 3) throw new Error('the create form did not show after three clicks on its link');
  }
  await page.fill('#create input[name="name"]', 'made1');
  await page.selectOption('#create select[name="driver"]', 'sim');
  // A command line without a kernel is not dropped without a word: the form says what is missing.
  await page.fill('#create input[name="cmdline"]', 'console=ttyS0');
  await page.click('#create button[type=submit]');
  t.regex(await page.$eval('#create input[name="kernel"]', (input) => (input as unknown as { validationMessage: string }).validationMessage), /needs a kernel/);
  await page.fill('#create input[name="cmdline"]', '');
  await page.click('#create button[type=submit]');
  await page.waitForSelector('#tree a.system[data-name="made1"]');
  t.is(await page.evaluate(() => (globalThis as unknown as { location: { hash: string } }).location.hash), '#/system/made1');
  // The form posts to the web API (its checks are the CLI's): a refusal is shown in the task log with its code.
  await page.goto(`${origin}/#/create`);
  await page.waitForSelector('#create input[name="name"]');
  await page.fill('#create input[name="name"]', 'made1');
  await page.selectOption('#create select[name="driver"]', 'sim');
  await page.click('#create button[type=submit]');
  await page.waitForFunction(() => /create made1 failed/.test((globalThis as unknown as { document: { querySelector(s: string): { textContent: string } } }).document.querySelector('#tasks').textContent));
  t.regex((await page.textContent('#tasks')) ?? '', /create made1 failed ACP_ERR_CDB_CONFLICT: system 'made1' exists already; delete it first, or pick another name/);
  await page.click('#tree a.system[data-name="made1"]');
  await page.waitForSelector('button[data-action="delete"]:not([disabled])');
  page.once('dialog', (dialog) => void dialog.accept());
  await page.click('button[data-action="delete"]:not([disabled])');
  await page.waitForSelector('#tree a.system[data-name="made1"]', { state: 'detached' });
  const log = (await page.textContent('#tasks')) ?? '';
  t.regex(log, /create made1 done/);
  t.regex(log, /delete made1 done/);

  // The node's charts: the last minutes from cdb.history, then a new point for each stats write.
  await page.click(`#tree a.node[data-name="${node}"]`);
  await page.waitForSelector('figure.chart[data-chart="CPU"][data-points]');
  const first = await points(page);
  await page.waitForFunction((before) => Number((globalThis as unknown as { document: { querySelector(s: string): { dataset: { points?: string } } } }).document.querySelector('figure.chart[data-chart="CPU"]').dataset.points) >= before + 2, first, { timeout: 30_000 });
  t.true((await points(page)) >= first + 2);
  await page.screenshot({ path: join(artifacts, 'node-charts.png') });
  const theme = await page.getAttribute('html', 'data-theme');
  await page.click('#theme');
  t.not(await page.getAttribute('html', 'data-theme'), theme);
  await page.waitForSelector('figure.chart[data-chart="CPU"][data-points]');
  await page.screenshot({ path: join(artifacts, 'node-charts-dark.png') });

  // acp ui's one-time link logs a browser in as the local operator.
  const link = (await admin.ask<Message & { url: string }>('webapi', { type: 'webapi.login-link' })).url;
  const linked = await (await chrome.newContext({ viewport: { width: 420, height: 800 } })).newPage();
  await linked.goto(link);
  await linked.waitForSelector('body[data-ready=true]');
  t.regex((await linked.textContent('#who')) ?? '', /operator \(admin\)/);
  await linked.screenshot({ path: join(artifacts, 'narrow.png') });
  // A double click makes one token, not two (one whose secret nobody saw).
  const tokenCount = async () => (await admin.ask<Message & { tokens: unknown[] }>('api', { type: 'api.token.list' })).tokens.length;
  const tokensBefore = await tokenCount();
  await linked.goto(`${new URL(link).origin}/#/tokens`);
  await linked.dblclick('button[data-action="create token"]:not([disabled])');
  await linked.waitForFunction(() => /create token done/.test((globalThis as unknown as { document: { querySelector(s: string): { textContent: string } } }).document.querySelector('#tasks').textContent));
  await new Promise((resolve) => setTimeout(resolve, 500));
  t.is(await tokenCount(), tokensBefore + 1, 'a double click made two tokens');

  // An auditor: the buttons are disabled; forced through REST or /ws, the node refuses.
  const audit = await tokenPage(chrome, origin, auditor);
  t.regex((await audit.textContent('#who')) ?? '', /\(auditor\)/);
  await audit.click('#tree a.system[data-name="dev1"]');
  await audit.waitForSelector('button[data-action="stop"]');
  // Running: an operator may stop, pause or restart it; the auditor's buttons say why they are off.
  for (const action of ['start', 'stop', 'pause', 'restart', 'migrate', 'delete']) t.true(await audit.isDisabled(`button[data-action="${action}"]`), action);
  t.regex((await audit.getAttribute('button[data-action="stop"]', 'title')) ?? '', /needs the operator role/);
  const forced = await audit.evaluate(async () => {
    const response = await fetch('/api/v1/systems/dev1/stop', { method: 'POST' });
    return { status: response.status, body: (await response.json()) as { error?: { code?: string } } };
  });
  t.is(forced.status, 403);
  t.is(forced.body.error?.code, 'ACP_ERR_AUTH_FORBIDDEN');
  await audit.evaluate(() => {
    const button = (globalThis as unknown as { document: { querySelector(s: string): { disabled: boolean; click(): void } } }).document.querySelector('button[data-action="stop"]');
    button.disabled = false;
    button.click();
  });
  await audit.waitForSelector('#tasks .task-status.failed');
  t.regex((await audit.textContent('#tasks')) ?? '', /ACP_ERR_AUTH_FORBIDDEN/);
  await audit.screenshot({ path: join(artifacts, 'system-auditor.png') });
  t.is(await page.textContent('#state').catch(() => null), null, 'the operator page moved on to the node view');
  t.is((await admin.ask<Message & { record: { value: { state: string } } }>('cdb', { type: 'cdb.get', key: `meta/system/dev1@${node}` })).record.value.state, 'running');

  // The cluster database restarts: its watches end, the page watches again and shows what changed meanwhile.
  await admin.ask('cdb', { type: 'chaos.crash' }).catch(() => undefined);
  await eventually(() => admin.ask('cdb', { type: 'cdb.put', key: 'object/system/after-crash', value: { name: 'after-crash', driver: 'sim' } }).then(() => true, () => undefined), 20_000, 'the CDB back');
  await page.waitForSelector('#tree a.system[data-name="after-crash"]', { timeout: 15_000 });
  await page.waitForFunction(() => (globalThis as unknown as { document: { querySelector(s: string): { textContent: string } } }).document.querySelector('#banner').textContent === '', undefined, { timeout: 10_000 });

  // Signed out on a system's view (its console open): nothing of that page asks the node again.
  await page.click('#tree a.system[data-name="dev1"]');
  await page.waitForSelector('.console .xterm-rows');
  let sockets = 0;
  page.on('websocket', () => (sockets += 1));
  await page.click('#logout');
  await page.waitForSelector('#login');
  await new Promise((resolve) => setTimeout(resolve, 3000));
  t.is(sockets, 0, 'the signed-out page opened WebSockets');
  await page.fill('#token', 'typed');
  await new Promise((resolve) => setTimeout(resolve, 1000));
  t.is(await page.inputValue('#token'), 'typed', 'the login form was drawn again over what was typed');
});
