/**
 * Management nodes: `acp node set NAME --management off` closes the node's web port (REST, UI, /ws
 * all gone, `acp ui` refused naming why), `--management on` opens it again; bad values are refused.
 */
import test from 'ava';
import type { Message } from '../runtime/messages.js';
import { allRunning, client, eventually, makeHome, runCli, startDaemon } from './helpers/node.js';

const reachable = (url: string) =>
  fetch(url).then(
    (response) => response.status,
    () => 'refused' as const,
  );

test('acp node set NAME --management off closes the web port; on opens it again', async (t) => {
  t.timeout(90_000);
  const home = makeHome(t);
  await allRunning(await startDaemon(t, home));
  const admin = await client(t, home);
  const address = async () => admin.ask<Message & { url: string | null; management: boolean }>('webapi', { type: 'webapi.address' });
  const before = (await address()).url!;
  t.is(await reachable(before), 200);
  await eventually(async () => (await admin.ask<Message & { record: unknown }>('cdb', { type: 'cdb.get', key: 'object/node/n1' }).catch(() => undefined)) ?? undefined, 10_000, 'the node object');

  const bad = await runCli(['node', 'set', 'n1', '--management', 'maybe'], home);
  t.not(bad.code, 0);
  t.regex(bad.stderr, /--management is on or off, not 'maybe' \(ACP_ERR_CLI_USAGE\)/);
  const unknown = await runCli(['node', 'set', 'n9', '--management', 'off'], home);
  t.regex(unknown.stderr, /no node 'n9'.*ACP_ERR_CDB_NOT_FOUND/);

  const off = await runCli(['node', 'set', 'n1', '--management', 'off'], home);
  t.is(off.code, 0, off.stderr);
  t.regex(off.stdout, /management off/);
  await eventually(async () => ((await reachable(before)) === 'refused' ? true : undefined), 10_000, 'the web port to close');
  t.like(await address(), { url: null, management: false });
  const link = await t.throwsAsync(admin.ask('webapi', { type: 'webapi.login-link' }));
  t.regex(link!.message, /not a management node/);

  t.is((await runCli(['node', 'set', 'n1', '--management', 'on'], home)).code, 0);
  const again = await eventually(async () => (await address()).url ?? undefined, 10_000, 'the web port to open');
  t.is(await reachable(again), 200);
  const node = await admin.ask<Message & { record: { value: { management?: boolean; name: string } } }>('cdb', { type: 'cdb.get', key: 'object/node/n1' });
  t.like(node.record.value, { name: 'n1', management: true });
});
