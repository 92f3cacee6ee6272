/**
 * Records that only some writers may write, whatever path the write takes (`cdb.put`, `cdb.cas`,
 * `cdb.delete`, `cdb.batch`): alarms are the primary monitor's (a forged one counted against the
 * health score and never cleared), pools and shares the administrator's (`storage.share-create`
 * needs admin; a raw put of the same object did not), and so are the host files a system boots
 * from (an operator could have put /etc/shadow into a guest as its initrd).
 */
import test from 'ava';
import { connect } from '../node/client.js';
import type { AcpClient } from '../runtime/client.js';
import type { AcpError } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import { allRunning, client, makeHome, startDaemon } from './helpers/node.js';

const alarm = { name: 'node-down.n1', rule: 'node-down', subject: 'n1', severity: 'critical', open: true, term: 1, by: 'n1', raisedAt: '2026-12-01T00:00:00.000Z', clearedAt: null, detail: 'forged', history: [] };
// On no node of this test: nothing is mounted.
const share = { name: 's7', type: 'sshfs', server: '127.0.0.1', path: '/x', nodes: ['n9'] };

test('alarms are written by a monitor only, shares and host boot files by an admin only, through every kind of write', async (t) => {
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
    t.is((error as AcpError | undefined)?.code, 'ACP_ERR_AUTH_FORBIDDEN', what);
  };

  const byMonitor = /may not write object\/alarm\/node-down\.n1: alarms are raised and cleared by the primary monitor only \(acknowledge one with acp alarm ack ID; an admin may delete one\)/;
  for (const [who, writer] of [['the home key', homeKey], ['an admin token', admin], ['an operator token', operator]] as const) {
    await refused(writer, { type: 'cdb.put', key: 'object/alarm/node-down.n1', value: alarm }, byMonitor, `${who}: put`);
    await refused(writer, { type: 'cdb.batch', ops: [{ op: 'put', key: 'object/alarm/node-down.n1', value: alarm }] }, byMonitor, `${who}: batch`);
  }
  // A delete cannot forge anything, and an alarm whose subject is gone (acp node rm) is never cleared: an admin may.
  await refused(operator, { type: 'cdb.delete', key: 'object/alarm/node-down.n1' }, byMonitor, 'operator: delete');
  for (const writer of [homeKey, admin]) {
    const gone = await t.throwsAsync(writer.ask('cdb', { type: 'cdb.delete', key: 'object/alarm/node-down.n1' }));
    t.is((gone as AcpError | undefined)?.code, 'ACP_ERR_CDB_NOT_FOUND', 'an admin may delete an alarm (there is none here)');
  }
  const missing = await t.throwsAsync(homeKey.ask('cdb', { type: 'cdb.get', key: 'object/alarm/node-down.n1' }));
  t.regex(missing?.message ?? '', /no record|not found/i, 'no forged alarm was written');

  const byAdmin = /may not write object\/storage\/share\/s7: a share names a key file on the nodes and a server they log in to, and is written by an admin only/;
  await refused(operator, { type: 'cdb.put', key: 'object/storage/share/s7', value: share }, byAdmin, 'operator: put');
  await refused(operator, { type: 'cdb.batch', ops: [{ op: 'put', key: 'object/storage/share/s7', value: share }] }, byAdmin, 'operator: batch');
  await admin.ask('cdb', { type: 'cdb.put', key: 'object/storage/share/s7', value: share });
  await refused(operator, { type: 'cdb.delete', key: 'object/storage/share/s7' }, byAdmin, 'operator: delete');
  await admin.ask('cdb', { type: 'cdb.delete', key: 'object/storage/share/s7' });

  // What a node reports of itself: its services write it (or an admin); an operator would misreport a running guest as stopped.
  const byServices = /may not write meta\/system\/vm1@n1: meta\/ and stats\/ are what the node's services report, written by them \(or an admin\)/;
  await refused(operator, { type: 'cdb.put', key: 'meta/system/vm1@n1', value: { state: 'stopped', node: 'n1' } }, byServices, 'operator: a system meta');
  await refused(operator, { type: 'cdb.batch', ops: [{ op: 'put', key: 'stats/node/n1@n1', value: { cpu: 0 } }] }, /may not write stats\/node\/n1@n1/, 'operator: stats, in a batch');
  await admin.ask('cdb', { type: 'cdb.put', key: 'meta/system/vm1@n1', value: { state: 'stopped', node: 'n1' } });
  await admin.ask('cdb', { type: 'cdb.delete', key: 'meta/system/vm1@n1' });

  // Host files the daemon opens for a guest: an admin names them; an operator keeps them as they are.
  const hostFile = /may not set boot\.(kernel|initrd|disk) to \/etc\/shadow in object\/system\/q1: a host file the daemon opens for a guest is an admin's to name; boot from a volume instead/;
  const q1 = { name: 'q1', driver: 'qemu', memoryMiB: 128, boot: { kernel: '/var/lib/acp/guest/vmlinuz', initrd: '/var/lib/acp/guest/initrd.gz' } };
  await refused(operator, { type: 'cdb.put', key: 'object/system/q1', value: { ...q1, boot: { kernel: '/etc/shadow' } } }, hostFile, 'operator: a kernel');
  await refused(operator, { type: 'cdb.batch', ops: [{ op: 'put', key: 'object/system/q1', value: { ...q1, boot: { disk: '/etc/shadow' } } }] }, hostFile, 'operator: a boot image file, in a batch');
  await admin.ask('cdb', { type: 'cdb.put', key: 'object/system/q1', value: q1 });
  const { record } = await operator.ask<Message & { record: { version: string } }>('cdb', { type: 'cdb.get', key: 'object/system/q1' });
  await refused(operator, { type: 'cdb.cas', key: 'object/system/q1', value: { ...q1, boot: { ...q1.boot, initrd: '/etc/shadow' } }, expect: record.version }, hostFile, 'operator: an initrd changed');
  await refused(operator, { type: 'cdb.cas', key: 'object/system/q1', value: { ...q1, boot: { kernel: q1.boot.kernel, initrd: q1.boot.kernel } }, expect: record.version }, /may not set boot\.initrd to \/var\/lib\/acp\/guest\/vmlinuz/, "operator: the admin's kernel moved to the initrd");
  // The same files with another field changed (a disk attached, HA state, vCPUs): allowed.
  await operator.ask('cdb', { type: 'cdb.cas', key: 'object/system/q1', value: { ...q1, vcpus: 2 }, expect: record.version });
  // Booting from a volume names no host file.
  await operator.ask('cdb', { type: 'cdb.put', key: 'object/system/q2', value: { name: 'q2', driver: 'qemu', boot: { disk: 'local/d1' }, disks: [{ pool: 'local', volume: 'd1' }] } });
  for (const id of ['q1', 'q2']) await admin.ask('cdb', { type: 'cdb.delete', key: `object/system/${id}` });
});
