/**
 * The VNC display of a real QEMU guest in the web UI (noVNC in Chromium): a system with
 * `display: 'vnc'` starts with a VGA card and a VNC server on a Unix socket, the page's noVNC
 * connects over /ws/display/<id> and its canvas receives the guest's framebuffer (lit pixels).
 * An auditor and a page from another origin are refused. Solo: a TCG guest and a browser.
 */
import { join } from 'node:path';
import WebSocket from 'ws';
import { guestImage } from '../adapters/guest-image.js';
import type { Message } from '../runtime/messages.js';
import { artifacts, browser, browserMissing, displayLit, tokenPage } from './helpers/browser.js';
import { guestMissing, runsWhen } from './helpers/requires.js';
import { systemNode } from './helpers/system.js';

const image = guestImage();
const missing = guestMissing() ?? browserMissing();

/** How a WebSocket to the display ends: its close code and reason. */
function closeOf(url: string, headers: Record<string, string>): Promise<{ code: number; reason: string }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { headers });
    socket.once('close', (code, reason) => resolve({ code, reason: reason.toString() }));
    socket.once('error', reject);
  });
}

runsWhen(missing)(`the UI's display: noVNC shows a QEMU guest's framebuffer; an auditor and another origin are refused${missing ? ` (skipped: ${missing})` : ''}`, async (t) => {
  t.timeout(240_000);
  const { api } = await systemNode(t);
  const origin = new URL((await api.ask<Message & { url: string }>('webapi', { type: 'webapi.address' })).url).origin;
  const token = async (role: string) => (await api.ask<Message & { secret: string }>('api', { type: 'api.token.create', role })).secret;
  // An admin's page: a kernel and an initrd are host files the daemon opens for the guest, which an admin names.
  const page = await tokenPage(await browser(t), origin, await token('admin'));
  // Made with the UI's form, its display chosen there.
  await page.click('#tree a[href="#/create"]');
  await page.fill('#create input[name="name"]', 'v1');
  await page.fill('#create input[name="memoryMiB"]', '256');
  await page.fill('#create input[name="kernel"]', image!.kernel);
  await page.fill('#create input[name="initrd"]', image!.initrd);
  await page.fill('#create input[name="cmdline"]', image!.cmdline);
  await page.selectOption('#create select[name="display"]', 'vnc');
  await page.click('#create button[type=submit]');
  await page.waitForSelector('#tree a.system[data-name="v1"]');
  t.is((await api.ask<Message & { record: { value: { display?: string } } }>('cdb', { type: 'cdb.get', key: 'object/system/v1' })).record.value.display, 'vnc');
  await page.click('#tree a.system[data-name="v1"]');
  await page.click('button[data-action="start"]:not([disabled])');
  await page.waitForSelector('#tree a.system[data-name="v1"][data-state="running"]', { timeout: 120_000 });
  // The guest's VGA screen (SeaBIOS, then the kernel's text console) reaches the canvas: lit pixels.
  const frame = await displayLit(page);
  t.log(`framebuffer ${frame.width}x${frame.height}, ${frame.lit} lit pixels`);
  t.true(frame.lit > 100);
  await page.locator('.display').screenshot({ path: join(artifacts, 'display-qemu.png') });

  const url = `${origin.replace(/^http/, 'ws')}/ws/display/v1`;
  const auditor = await closeOf(url, { authorization: `Bearer ${await token('auditor')}`, origin });
  t.is(auditor.code, 4403, auditor.reason);
  t.regex(auditor.reason, /ACP_ERR_AUTH_FORBIDDEN/);
  const foreign = await closeOf(url, { authorization: `Bearer ${await token('operator')}`, origin: 'http://elsewhere.example' });
  t.is(foreign.code, 4403, foreign.reason);
  await api.ask('hypervisor', { type: 'system.stop', id: 'v1', force: true }, { timeoutMs: 60_000 });
});
