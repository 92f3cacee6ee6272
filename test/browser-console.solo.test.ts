/**
 * The serial console of a real QEMU guest in the web UI (xterm.js in Chromium): the test guest's
 * ready line shows, and a line typed into the console reaches the guest's serial port and comes
 * back as the guest's echo. Solo: a TCG guest boot and a browser beside the suite would crowd it.
 */
import { join } from 'node:path';
import { guestImage, GUEST_READY_LINE } from '../adapters/guest-image.js';
import type { Message } from '../runtime/messages.js';
import { artifacts, browser, browserMissing, tokenPage, typeInto } from './helpers/browser.js';
import { guestMissing, runsWhen } from './helpers/requires.js';
import { systemNode } from './helpers/system.js';

const image = guestImage();
const missing = guestMissing() ?? browserMissing();

runsWhen(missing)(`the UI's serial console: a QEMU guest's ready line shows, and a typed line is echoed by the guest${missing ? ` (skipped: ${missing})` : ''}`, async (t) => {
  t.timeout(240_000);
  const { api } = await systemNode(t);
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/g1', value: { name: 'g1', driver: 'qemu', memoryMiB: 256, boot: { kernel: image!.kernel, initrd: image!.initrd, cmdline: image!.cmdline } } });
  const origin = new URL((await api.ask<Message & { url: string }>('webapi', { type: 'webapi.address' })).url).origin;
  const operator = (await api.ask<Message & { secret: string }>('api', { type: 'api.token.create', role: 'operator' })).secret;
  const page = await tokenPage(await browser(t), origin, operator);
  await page.click('#tree a.system[data-name="g1"]');
  await page.click('button[data-action="start"]:not([disabled])');
  await page.waitForSelector('#tree a.system[data-name="g1"][data-state="running"]', { timeout: 120_000 });
  await page.waitForFunction(
    (ready) => ((globalThis as unknown as { document: { querySelector(s: string): { textContent: string | null } | null } }).document.querySelector('.console .xterm-rows')?.textContent ?? '').includes(ready),
    GUEST_READY_LINE,
    { timeout: 120_000 },
  );
  await typeInto(page, 'echo typed-into-qemu');
  await page.screenshot({ path: join(artifacts, 'console-qemu.png') });
  // The echo came from the guest: it is in the console log the node keeps, too.
  const log = await api.ask<Message & { data: string }>('hypervisor', { type: 'system.console', id: 'g1' });
  t.true(log.data.includes('echo typed-into-qemu'), log.data.slice(-500));
  await api.ask('hypervisor', { type: 'system.stop', id: 'g1', force: true }, { timeoutMs: 60_000 });
});
