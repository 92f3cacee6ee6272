/**
 * The web UI across a restart of its node, in a real browser: the page says the node does not
 * answer, keeps asking, and once the node is back shows the login page (web sessions do not
 * survive a restart) on its own, without a reload.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Message } from '../runtime/messages.js';
import { browser, browserMissing, tokenPage } from './helpers/browser.js';
import { freePort } from './helpers/agent.js';
import { allRunning, client, makeHome, startDaemon } from './helpers/node.js';
import { runsWhen } from './helpers/requires.js';

const missing = browserMissing();

runsWhen(missing)(`the UI across a restart of its node: it says the node does not answer, keeps asking, and shows the login page once it is back${missing ? ` (skipped: ${missing})` : ''}`, async (t) => {
  t.timeout(120_000);
  const home = makeHome(t);
  // A fixed web port: the page must find the node where it was.
  const configPath = join(home, 'config.json');
  const config = JSON.parse(readFileSync(configPath, 'utf8')) as { webapi: Record<string, unknown> };
  writeFileSync(configPath, JSON.stringify({ ...config, webapi: { ...config.webapi, port: await freePort() } }));
  const first = await startDaemon(t, home);
  await allRunning(first);
  const admin = await client(t, home);
  const origin = new URL((await admin.ask<Message & { url: string }>('webapi', { type: 'webapi.address' })).url).origin;
  const operator = (await admin.ask<Message & { secret: string }>('api', { type: 'api.token.create', role: 'operator' })).secret;
  await admin.close();
  const chrome = await browser(t);
  const page = await tokenPage(chrome, origin, operator);
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.evaluate(() => ((globalThis as unknown as { marker: number }).marker = 7));

  await first.stop('restart under the page');
  await page.waitForFunction(() => /does not answer; trying again/.test((globalThis as unknown as { document: { querySelector(s: string): { textContent: string } | null } }).document.querySelector('#banner')?.textContent ?? ''), undefined, { timeout: 20_000 });
  await allRunning(await startDaemon(t, home));
  await page.waitForSelector('#login', { timeout: 20_000 });
  t.is(await page.evaluate(() => (globalThis as unknown as { marker?: number }).marker), 7, 'the page was reloaded');
  t.deepEqual(errors, [], 'the page threw');
});
