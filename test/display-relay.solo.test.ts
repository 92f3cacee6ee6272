/**
 * A guest's display across nodes: a QEMU guest with `display: 'vnc'` runs on n2, and the web UI of
 * n1 shows it in noVNC, its RFB stream relayed between the two nodes' webapi actors through the
 * agents (both ways: noVNC's requests reach the guest's VNC server, and its framebuffer comes back).
 * Solo: a TCG guest, two daemons and a browser.
 */
import { join } from 'node:path';
import { guestImage } from '../adapters/guest-image.js';
import type { Message } from '../runtime/messages.js';
import { askVia, cliOk, startCluster } from './helpers/agent.js';
import { artifacts, browser, browserMissing, displayLit, tokenPage } from './helpers/browser.js';
import { guestMissing, runsWhen } from './helpers/requires.js';

const image = guestImage();
const missing = guestMissing() ?? browserMissing();

runsWhen(missing)(`n1's UI shows the display of a QEMU guest running on n2, relayed through the agents${missing ? ` (skipped: ${missing})` : ''}`, async (t) => {
  t.timeout(240_000);
  const [n1, n2] = await startCluster(t, ['n1', 'n2']);
  t.teardown(() => askVia(n2!, 'hypervisor', { type: 'system.stop', id: 'v2', force: true }, 60_000).catch(() => undefined));
  await cliOk(['system', 'create', 'v2', '--driver', 'qemu', '--memory', '256', '--node', 'n2', '--display', 'vnc', '--kernel', image!.kernel, '--initrd', image!.initrd, '--cmdline', image!.cmdline], n1!.home);
  const operator = (JSON.parse((await cliOk(['--json', 'token', 'api', 'create', '--role', 'operator'], n1!.home)).stdout) as { secret: string }).secret;
  const origin = new URL((await askVia<Message & { url: string }>(n1!, 'webapi', { type: 'webapi.address' })).url).origin;
  const page = await tokenPage(await browser(t), origin, operator);
  await page.click('#tree a.system[data-name="v2"]');
  await page.click('button[data-action="start"]:not([disabled])');
  await page.waitForSelector('#tree a.system[data-name="v2"][data-state="running"]', { timeout: 120_000 });
  t.is(await page.textContent('dd[data-fact="node"]'), 'n2');
  const frame = await displayLit(page);
  t.log(`framebuffer ${frame.width}x${frame.height}, ${frame.lit} lit pixels, from n2 through n1`);
  t.true(frame.lit > 100);
  await page.locator('.display').screenshot({ path: join(artifacts, 'display-relayed.png') });
});
