/**
 * A system's disks from the command line: `readonly=` takes only what it can mean; attach and
 * create refuse a missing pool or volume, an ISO as a disk and a simulated system's disks.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { RecordView } from '../actors/cdb/index.js';
import { newSystemSchema, parseKey, systemObjectSchema, validateObject } from '../actors/model.js';
import { parseDisk } from '../cli/system-disks.js';
import { systemSpec } from '../cli/system-spec.js';
import type { AcpClient } from '../runtime/client.js';
import { AcpError } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import { runCli, type CliResult } from './helpers/node.js';
import { systemNode } from './helpers/system.js';

const usageError = (t: ExecutionContext, work: () => unknown): AcpError => {
  const error = t.throws(work, { instanceOf: AcpError })!;
  t.is(error.code, 'ACP_ERR_CLI_USAGE');
  return error;
};

test('parseDisk: readonly takes true/false, on/off, yes/no, 1/0 or nothing (true); anything else names the value and what is allowed', (t) => {
  t.like(parseDisk('local/d1,readonly'), { pool: 'local', volume: 'd1', readonly: true });
  for (const yes of ['true', 'on', 'yes', '1', 'TRUE']) t.is(parseDisk(`local/d1,readonly=${yes}`)['readonly'], true, yes);
  for (const no of ['false', 'off', 'no', '0']) t.is(parseDisk(`local/d1,readonly=${no}`)['readonly'], false, no);
  for (const bad of ['maybe', '', '2']) {
    const error = usageError(t, () => parseDisk(`local/after,readonly=${bad}`, 'disk'));
    t.regex(error.message, /^disk local\/after,readonly=\S*: readonly takes true or false \(also on\/off, yes\/no, 1\/0\), or no value for true/);
    t.true(error.message.includes(`not '${bad}'`), error.message);
  }
  t.regex(usageError(t, () => parseDisk('local/d1,bus=scsi,bus=ide')).message, /bus given twice; give it once/);
  t.like(parseDisk('local/d1,bus=scsi,cache=none'), { bus: 'scsi', cache: 'none' });
});

test('a new spec gives a sim system no disks or CD-ROM; the stored one still reads', (t) => {
  const sim = { name: 's', driver: 'sim', disks: [{ pool: 'local', volume: 'd1' }] };
  const refused = newSystemSchema.safeParse(sim);
  t.false(refused.success);
  t.deepEqual(refused.error!.issues[0]!.path, ['disks']);
  t.regex(refused.error!.issues[0]!.message, /a simulated system \(driver sim\) has no disks or CD-ROM/);
  t.regex(usageError(t, () => systemSpec('s', { driver: 'sim', disk: ['local/d1'] })).message, /field 'disks': a simulated system/);
  t.regex(usageError(t, () => systemSpec('s', { driver: 'sim', iso: 'local/cd' })).message, /field 'iso': a simulated system/);
  t.true(newSystemSchema.safeParse({ name: 'q', disks: [{ pool: 'local', volume: 'd1' }] }).success);
  t.true(newSystemSchema.safeParse({ name: 's', driver: 'sim' }).success);
  // Stored specs (and the CDB) keep taking it: the hypervisor, the HA manager and the Storage service read what is there.
  t.true(systemObjectSchema.safeParse(sim).success);
  t.notThrows(() => validateObject(parseKey('object/system/s'), sim));
});

/** A usage or node error: its exit code, one line naming the code, nothing on stdout. */
function failed(t: ExecutionContext, result: CliResult, code: number, errorCode: string, ...includes: string[]): void {
  t.is(result.code, code, result.stderr);
  t.is(result.stdout, '');
  t.regex(result.stderr, new RegExp(`^acp: .*\\(${errorCode}\\)\\n$`));
  for (const text of includes) t.true(result.stderr.includes(text), `'${text}' not in: ${result.stderr}`);
  t.false(result.stderr.includes('is not a function'), result.stderr);
}

async function systemObject(api: AcpClient, id: string): Promise<{ disks?: Record<string, unknown>[]; iso?: unknown } | undefined> {
  return api.ask<Message & { record: RecordView }>('cdb', { type: 'cdb.get', key: `object/system/${id}` }).then(
    (reply) => reply.record.value as { disks?: Record<string, unknown>[] },
    () => undefined,
  );
}

/** A node with pool 'local', its volumes d1 (qcow2) and cd (an ISO), a qemu system q1 and a sim system s1. */
async function diskNode(t: ExecutionContext): Promise<{ api: AcpClient; cli: (...args: string[]) => Promise<CliResult> }> {
  const { api, home } = await systemNode(t);
  const dir = mkdtempSync(join(tmpdir(), 'acp-disks-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  await api.ask('storage', { type: 'storage.pool-create', spec: { name: 'local', type: 'dir', path: join(dir, 'images'), content: ['images', 'iso'] } });
  // Volume objects as the Storage service writes them (these tests need no qemu-img).
  await api.ask('cdb', { type: 'cdb.put', key: 'object/storage/volume/local/d1', value: { name: 'd1', pool: 'local', sizeBytes: 1024 * 1024, format: 'qcow2', node: 'n1' } });
  await api.ask('cdb', { type: 'cdb.put', key: 'object/storage/volume/local/cd', value: { name: 'cd', pool: 'local', sizeBytes: 1024 * 1024, format: 'iso', node: 'n1' } });
  const cli = (...args: string[]) => runCli(args, home);
  t.is((await cli('system', 'create', 'q1', '--driver', 'qemu', '--memory', '128')).code, 0);
  t.is((await cli('system', 'create', 's1', '--driver', 'sim')).code, 0);
  return { api, cli };
}

test.serial("acp system disk attach: readonly= takes true/false (on/off, yes/no, 1/0) or nothing; 'maybe' is a usage error naming it", async (t) => {
  t.timeout(120_000);
  const { api, cli } = await diskNode(t);
  failed(t, await cli('system', 'disk', 'attach', 'q1', 'local/d1,readonly=maybe'), 2, 'ACP_ERR_CLI_USAGE', "not 'maybe'", 'readonly takes true or false');
  t.deepEqual((await systemObject(api, 'q1'))?.disks, []);
  t.is((await cli('system', 'disk', 'attach', 'q1', 'local/d1,readonly=off')).code, 0);
  t.like((await systemObject(api, 'q1'))?.disks, [{ pool: 'local', volume: 'd1', readonly: false }]);
});

test.serial('acp system disk attach and system create refuse a missing pool or volume, an ISO as a disk, a qcow2 as the CD-ROM and a sim system\'s disks, naming what to do', async (t) => {
  t.timeout(120_000);
  const { api, cli } = await diskNode(t);
  failed(t, await cli('system', 'disk', 'attach', 'q1', 'local/nope'), 1, 'ACP_ERR_STORAGE_NOT_FOUND', "no volume 'local/nope'", 'acp storage volume ls local', 'acp storage volume create local/nope');
  failed(t, await cli('system', 'disk', 'attach', 'q1', 'nopool/x'), 1, 'ACP_ERR_STORAGE_NOT_FOUND', "no pool 'nopool'", 'acp storage pool ls', 'acp storage pool create nopool');
  failed(t, await cli('system', 'disk', 'attach', 's1', 'local/d1'), 2, 'ACP_ERR_CLI_USAGE', 'a simulated system (driver sim) has no disks');
  failed(t, await cli('system', 'disk', 'attach', 'q1', 'local/cd'), 1, 'ACP_ERR_STORAGE_UNSUPPORTED', "volume 'local/cd' is an ISO image, not a disk", 'iso field', '--iso local/cd');
  t.deepEqual((await systemObject(api, 'q1'))?.disks, [], 'nothing refused was attached');
  t.deepEqual((await systemObject(api, 's1'))?.disks, []);
  // acp system create has the same checks, and writes nothing when one fails.
  failed(t, await cli('system', 'create', 'q2', '--disk', 'local/nope'), 1, 'ACP_ERR_STORAGE_NOT_FOUND', "no volume 'local/nope'");
  failed(t, await cli('system', 'create', 'q2', '--disk', 'nopool/x'), 1, 'ACP_ERR_STORAGE_NOT_FOUND', "no pool 'nopool'");
  failed(t, await cli('system', 'create', 'q2', '--disk', 'local/cd'), 1, 'ACP_ERR_STORAGE_UNSUPPORTED', 'is an ISO image');
  failed(t, await cli('system', 'create', 'q2', '--iso', 'local/d1'), 1, 'ACP_ERR_STORAGE_UNSUPPORTED', 'is a qcow2 disk image, not an ISO');
  failed(t, await cli('system', 'create', 's2', '--driver', 'sim', '--disk', 'local/d1'), 2, 'ACP_ERR_CLI_USAGE', "field 'disks': a simulated system");
  t.is(await systemObject(api, 'q2'), undefined);
  t.is(await systemObject(api, 's2'), undefined);
  t.is((await cli('system', 'create', 'q3', '--disk', 'local/d1', '--iso', 'local/cd')).code, 0);
  t.like(await systemObject(api, 'q3'), { disks: [{ pool: 'local', volume: 'd1' }], iso: { pool: 'local', volume: 'cd' } });
  t.is((await cli('system', 'disk', 'attach', 'q1', 'local/d1')).code, 0);
});
