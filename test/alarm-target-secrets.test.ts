/**
 * Alarm targets hold a webhook's bearer token and HMAC secret: only an admin reads or writes
 * `object/alarm-target/`. An auditor or operator token gets ACP_ERR_AUTH_FORBIDDEN on a get, and
 * never sees the records in a list or a watch (its snapshot or its events); the admin does.
 */
import test from 'ava';
import { connect } from '../node/client.js';
import type { Message } from '../runtime/messages.js';
import { allRunning, client, eventually, makeHome, startDaemon } from './helpers/node.js';

const SECRET = 'hunter2-bearer-secret';
const key = 'object/alarm-target/ops';
const target = { name: 'ops', webhook: 'http://127.0.0.1:9/hook', minSeverity: 'warning', bearer: SECRET, hmacSecret: 'hmac-secret-value' };

test('an auditor or operator token cannot read alarm targets (get, list, watch) nor write them; an admin can', async (t) => {
  t.timeout(60_000);
  const home = makeHome(t);
  await allRunning(await startDaemon(t, home));
  const admin = await client(t, home);
  const tokenOf = async (role: string) => (await admin.ask<Message & { secret: string }>('api', { type: 'api.token.create', role })).secret;
  await admin.ask('cdb', { type: 'cdb.put', key, value: target });
  await admin.ask('cdb', { type: 'cdb.put', key: 'object/system/dev1', value: { name: 'dev1', driver: 'sim' } });

  for (const role of ['auditor', 'operator']) {
    const reader = await connect({ home, token: await tokenOf(role) });
    t.teardown(() => reader.close());
    const refused = await t.throwsAsync(reader.ask('cdb', { type: 'cdb.get', key }));
    t.regex(refused?.message ?? '', /ACP_ERR_AUTH_FORBIDDEN|read by an admin only/, role);
    // Asked for by name, the targets are refused (not an empty list that would mislead); a wider prefix leaves them out.
    const listRefused = await t.throwsAsync(reader.ask('cdb', { type: 'cdb.list', prefix: 'object/alarm-target/' }));
    t.regex(listRefused?.message ?? '', /read by an admin only/, role);
    const watchRefused = await t.throwsAsync(
      new Promise((resolve, reject) => {
        reader.subscribe('cdb', { type: 'cdb.watch', prefix: 'object/alarm-target/' }, resolve, reject);
        setTimeout(() => resolve('no answer to the watch'), 5000);
      }),
    );
    t.regex(watchRefused?.message ?? '', /read by an admin only/, `${role}'s watch of the targets is refused`);
    for (const prefix of ['', 'object/']) {
      const page = await reader.ask<Message & { records: { key: string }[] }>('cdb', { type: 'cdb.list', prefix, limit: 10_000 });
      t.false(page.records.some((record) => record.key.startsWith('object/alarm-target/')), `${role} lists '${prefix}'`);
      if (prefix === 'object/') t.true(page.records.some((record) => record.key === 'object/system/dev1'), 'the rest is still listed');
    }
    const seen: string[] = [];
    const cancel = reader.watch('object/', (event) => {
      const records = (event as Message & { records?: { key: string }[]; record?: { key: string } }).records ?? [];
      const record = (event as Message & { record?: { key: string; value: unknown } }).record;
      for (const entry of [...records, ...(record ? [record] : [])]) seen.push(`${entry.key} ${JSON.stringify(entry)}`);
    });
    // A change to the target while it watches, then one to a system (to know the events arrived).
    await admin.ask('cdb', { type: 'cdb.put', key, value: { ...target, minSeverity: 'critical' } });
    await admin.ask('cdb', { type: 'cdb.put', key: 'object/system/dev1', value: { name: 'dev1', driver: 'sim', vcpus: 2 } });
    await eventually(() => (seen.some((line) => line.includes('"vcpus":2')) ? true : undefined), 10_000, `${role}'s watch to see the system change`);
    cancel();
    t.false(seen.some((line) => line.startsWith('object/alarm-target/') || line.includes(SECRET)), `${role}'s watch saw: ${seen.join('\n')}`);
    const write = await t.throwsAsync(reader.ask('cdb', { type: 'cdb.put', key: 'object/alarm-target/evil', value: { ...target, name: 'evil' } }));
    t.regex(write?.message ?? '', /may not (send|write)/, role);
  }

  const own = await admin.ask<Message & { record: { value: { bearer: string } } }>('cdb', { type: 'cdb.get', key });
  t.is(own.record.value.bearer, SECRET);
  const adminToken = await connect({ home, token: await tokenOf('admin') });
  t.teardown(() => adminToken.close());
  const listed = await adminToken.ask<Message & { records: { key: string }[] }>('cdb', { type: 'cdb.list', prefix: 'object/alarm-target/' });
  t.deepEqual(listed.records.map((record) => record.key), [key]);
});
