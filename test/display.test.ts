/**
 * A system's display, without a guest: QEMU's arguments for `display: 'vnc'` (a VGA card, VNC on a
 * Unix socket in the run dir, never TCP); a simulated guest with a display refused at start; the
 * display route refuses a system with none, a bad id, no credentials and a foreign page, each with
 * its code. The real thing (noVNC and QEMU) is in browser-display.solo.test.ts.
 */
import test from 'ava';
import WebSocket from 'ws';
import { qemuArgs } from '../adapters/drivers/qemu-args.js';
import { systemObjectSchema } from '../actors/model.js';
import type { AcpError } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import { systemNode } from './helpers/system.js';

function closeOf(url: string, headers: Record<string, string>): Promise<{ code: number; reason: string }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { headers });
    socket.once('close', (code, reason) => resolve({ code, reason: reason.toString() }));
    socket.once('error', reject);
  });
}

test("display 'vnc' gives QEMU a VGA card and a VNC server on the run dir's Unix socket; none gives neither", (t) => {
  const paths = { consoleLog: '/h/log/systems/a.console.log', runDir: '/h/run/vmm/a' };
  const spec = (display?: 'vnc' | 'none') => systemObjectSchema.parse({ name: 'a', boot: { kernel: '/k' }, ...(display ? { display } : {}) });
  const vnc = qemuArgs('a', spec('vnc'), paths, 'tcg');
  t.is(vnc[vnc.indexOf('-vnc') + 1], 'unix:/h/run/vmm/a/vnc.sock');
  t.is(vnc[vnc.indexOf('-device') + 1], 'VGA');
  for (const display of [undefined, 'none'] as const) t.false(qemuArgs('a', spec(display), paths, 'tcg').includes('-vnc'));
  t.false(systemObjectSchema.safeParse({ name: 'a', display: 'spice' }).success);
});

test('a sim guest with a display is refused; the display route refuses what it cannot show, with a code', async (t) => {
  t.timeout(60_000);
  const { api } = await systemNode(t);
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/s1', value: { name: 's1', driver: 'sim', display: 'vnc' } });
  const start = await t.throwsAsync(api.ask('hypervisor', { type: 'system.start', id: 's1' }, { timeoutMs: 30_000 }));
  t.is((start as AcpError).code, 'ACP_ERR_SYSTEM_NO_DISPLAY');
  t.regex(start!.message, /a simulated guest has none/);

  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/s2', value: { name: 's2', driver: 'sim' } });
  await api.ask('hypervisor', { type: 'system.start', id: 's2' }, { timeoutMs: 30_000 });
  const none = await t.throwsAsync(api.ask('hypervisor', { type: 'system.display', id: 's2' }));
  t.is((none as AcpError).code, 'ACP_ERR_SYSTEM_NO_DISPLAY');

  const origin = new URL((await api.ask<Message & { url: string }>('webapi', { type: 'webapi.address' })).url).origin;
  const operator = (await api.ask<Message & { secret: string }>('api', { type: 'api.token.create', role: 'operator' })).secret;
  const ws = `${origin.replace(/^http/, 'ws')}/ws/display`;
  const bearer = { authorization: `Bearer ${operator}`, origin };
  const noDisplay = await closeOf(`${ws}/s2`, bearer);
  t.is(noDisplay.code, 4400);
  t.regex(noDisplay.reason, /^ACP_ERR_SYSTEM_NO_DISPLAY: system 's2' has no display/);
  t.is((await closeOf(`${ws}/Bad..Id`, bearer)).code, 4400);
  const anonymous = await closeOf(`${ws}/s2`, { origin });
  t.is(anonymous.code, 4401);
  t.regex(anonymous.reason, /ACP_ERR_AUTH_BAD_TOKEN/);
  t.is((await closeOf(`${ws}/s2`, { ...bearer, origin: 'http://elsewhere.example' })).code, 4403);
  t.is((await closeOf(`${ws}/nosuch`, bearer)).code, 4404);
  await api.ask('hypervisor', { type: 'system.stop', id: 's2' }, { timeoutMs: 30_000 });
});
