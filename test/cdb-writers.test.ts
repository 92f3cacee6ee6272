/**
 * Records that only some writers may write, whatever path the write takes (`cdb.put`, `cdb.cas`,
 * `cdb.delete`, `cdb.batch`): alarms are the primary monitor's (a forged one counted against the
 * health score and never cleared), and shares the administrator's (`storage.share-create` needs
 * admin; a raw put of the same object did not).
 */
import test from 'ava';
import { connect } from '../node/client.js';
import type { AcpClient } from '../runtime/client.js';
import type { Message } from '../runtime/messages.js';
import { allRunning, client, makeHome, startDaemon } from './helpers/node.js';

const alarm = { name: 'node-down.n1', rule: 'node-down', subject: 'n1', severity: 'critical', open: true, term: 1, by: 'n1', raisedAt: '2026-12-01T00:00:00.000Z', clearedAt: null, detail: 'forged', history: [] };
// On no node of this test: nothing is mounted.
const share = { name: 's7', type: 'sshfs', server: '127.0.0.1', path: '/x', nodes: ['n9'] };

test('alarms are written by a monitor only, shares by an admin only, through every kind of write', async (t) => {
  t.timeout(60_000);
  const home = makeHome(t);
  await allRunning(await startDaemon(t, home));
  const homeKey = await client(t, home);
  const tokenClient = async (role: string): Promise<AcpClient> => {
    const { secret } = await homeKey.ask<Message & { secret: string }>('api', { type: 'api.token.create', role });
    const connection = await connect({ home, token: secret });
    t.teardown(() => connection.close());
    return connection;
  };
  const operator = await tokenClient('operator');
  const admin = await tokenClient('admin');
  const refused = async (writer: AcpClient, message: Message, pattern: RegExp, what: string) => {
    const error = await t.throwsAsync(writer.ask('cdb', message), undefined, what);
    t.regex(error?.message ?? '', pattern, what);
    t.regex(error?.message ?? '', /ACP_ERR_AUTH_FORBIDDEN|may not write/, what);
  };

  const byMonitor = /may not write object\/alarm\/node-down\.n1: alarms are raised and cleared by the primary monitor only \(acknowledge one with acp alarm ack ID\)/;
  for (const [who, writer] of [['the home key', homeKey], ['an admin token', admin], ['an operator token', operator]] as const) {
    await refused(writer, { type: 'cdb.put', key: 'object/alarm/node-down.n1', value: alarm }, byMonitor, `${who}: put`);
    await refused(writer, { type: 'cdb.delete', key: 'object/alarm/node-down.n1' }, byMonitor, `${who}: delete`);
    await refused(writer, { type: 'cdb.batch', ops: [{ op: 'put', key: 'object/alarm/node-down.n1', value: alarm }] }, byMonitor, `${who}: batch`);
  }
  const missing = await t.throwsAsync(homeKey.ask('cdb', { type: 'cdb.get', key: 'object/alarm/node-down.n1' }));
  t.regex(missing?.message ?? '', /no record|not found/i, 'no forged alarm was written');

  const byAdmin = /may not write object\/storage\/share\/s7: a share names a key file on the nodes and a server they log in to, and is written by an admin only/;
  await refused(operator, { type: 'cdb.put', key: 'object/storage/share/s7', value: share }, byAdmin, 'operator: put');
  await refused(operator, { type: 'cdb.batch', ops: [{ op: 'put', key: 'object/storage/share/s7', value: share }] }, byAdmin, 'operator: batch');
  await admin.ask('cdb', { type: 'cdb.put', key: 'object/storage/share/s7', value: share });
  await refused(operator, { type: 'cdb.delete', key: 'object/storage/share/s7' }, byAdmin, 'operator: delete');
  await admin.ask('cdb', { type: 'cdb.delete', key: 'object/storage/share/s7' });
});
