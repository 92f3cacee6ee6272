/**
 * A system's disks and the size and number flags from the command line: `readonly=` takes only
 * what it can mean; attach and create refuse a missing pool or volume, an ISO as a disk and a
 * simulated system's disks; a flag given twice is a usage error naming it; a number flag that is
 * none says what was given; schema bounds are the field's own; sizes round up to 512-byte sectors.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { RecordView } from '../actors/cdb/index.js';
import { newSystemSchema, parseKey, systemObjectSchema, validateObject } from '../actors/model.js';
import { sectorRounded } from '../actors/storage/volumes.js';
import { flagOnce, onlyOnce, parseSize, refuseRepeatedFlags, sizeValue, wholeNumber } from '../cli/flags.js';
import { parseDisk } from '../cli/system-disks.js';
import { systemSpec } from '../cli/system-spec.js';
import type { AcpClient } from '../runtime/client.js';
import { AcpError } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import { eventually, makeHome, runCli, type CliResult } from './helpers/node.js';
import { qemuImgMissing, runsWhen } from './helpers/requires.js';
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

test('any flag but --disk and --nic given twice is refused naming it, once (not again under its camelCase key)', async (t) => {
  t.is(usageError(t, () => refuseRepeatedFlags({ _: ['system', 'create'], $0: 'acp', kernel: ['a', 'b'] })).message, '--kernel given twice; give it once');
  t.is(usageError(t, () => refuseRepeatedFlags({ _: [], $0: 'acp', 'anti-affinity': ['a', 'b'], antiAffinity: ['a', 'b'] })).message, '--anti-affinity given twice; give it once');
  t.notThrows(() => refuseRepeatedFlags({ _: ['a', 'b'], $0: 'acp', disk: ['l/a', 'l/b'], nic: ['lan', 'wan'], kernel: 'k' }));
  const home = makeHome(t);
  const twice = await runCli(['system', 'create', 'x', '--kernel', '/a', '--kernel', '/b'], home);
  t.is(twice.code, 2, twice.stderr);
  t.regex(twice.stderr, /--kernel given twice; give it once \(ACP_ERR_CLI_USAGE\)/);
  // A flag with its own coerce says the same, before its value is read.
  const nodes = await runCli(['storage', 'device', 'ls', '--node', 'a', '--node', 'b'], home);
  t.is(nodes.code, 2, nodes.stderr);
  t.regex(nodes.stderr, /--node given twice; give it once/);
});

test('flagOnce: a flag given twice is refused naming it; a whole number names the flag and what was given', (t) => {
  t.regex(usageError(t, () => onlyOnce('size', ['64M', '128M'])).message, /^--size given twice; give it once$/);
  t.regex(usageError(t, () => onlyOnce('vcpus', [1, 2, 3])).message, /^--vcpus given 3 times; give it once$/);
  const size = flagOnce('size', sizeValue);
  t.is(size('64M'), 64 * 1024 ** 2);
  t.regex(usageError(t, () => size(['64M', '128M'])).message, /--size given twice/);
  t.regex(usageError(t, () => size('')).message, /--size : give a size like 64M/);
  t.is(usageError(t, () => flagOnce('size', sizeValue, ['node', 'acp', '--size', '-1M'])('')).message, '-1M after --size was read as flags, not as its value: write --size=-1M to give it as the value');
  t.is(parseSize('12345'), 12345, 'bytes as given: the Storage service rounds up to sectors');
  const restarts = flagOnce('max-restart', wholeNumber({}, ['node', 'acp', 'system', 'create', 'h', '--max-restart', 'abc']));
  t.is(restarts(3), 3);
  t.is(usageError(t, () => restarts(Number.NaN)).message, '--max-restart must be a whole number, not "abc"');
  t.is(usageError(t, () => restarts(2.5)).message, '--max-restart must be a whole number, not 2.5');
  t.is(usageError(t, () => restarts(undefined)).message, '--max-restart must be a whole number, not nothing');
  t.regex(usageError(t, () => restarts([1, 2])).message, /--max-restart given twice/);
  const timeout = flagOnce('timeout', wholeNumber({ min: 0, max: 600_000, unit: 'milliseconds', note: 'nothing was stopped' }, []));
  t.is(usageError(t, () => timeout(-1)).message, '--timeout must be a whole number of milliseconds from 0 to 600000, not -1; nothing was stopped');
  t.is(usageError(t, () => timeout(Number.NaN)).message, '--timeout must be a whole number of milliseconds from 0 to 600000, not a text that is no number; nothing was stopped');
  t.regex(usageError(t, () => flagOnce('web-port', wholeNumber({ min: 0, max: 65535, what: 'a port number (0-65535)' }, []))(70000)).message, /--web-port must be a port number \(0-65535\), not 70000/);
});

test('schema bounds are the field\'s own (memoryMiB 1e308 names 16777216); a new spec gives a sim system no disks or CD-ROM, the stored one still reads', (t) => {
  const memory = systemObjectSchema.safeParse({ name: 'm', memoryMiB: 1e308 });
  t.false(memory.success);
  t.is(memory.error!.issues[0]!.message, 'must be a whole number from 16 to 16777216');
  t.regex(usageError(t, () => systemSpec('m', { spec: '{"memoryMiB":1e308}' })).message, /field 'memoryMiB': must be a whole number from 16 to 16777216/);
  t.regex(usageError(t, () => systemSpec('v', { vcpus: 0 })).message, /field 'vcpus': must be a whole number from 1 to 512/);
  t.regex(usageError(t, () => systemSpec('h', { ha: true, 'max-restart': 101 })).message, /field 'maxRestart': must be a whole number from 0 to 100/);

  const twice = newSystemSchema.safeParse({ name: 'q', driver: 'qemu', disks: [{ pool: 'local', volume: 'd1' }, { pool: 'local', volume: 'd1' }] });
  t.regex(twice.error!.issues[0]!.message, /volume local\/d1 is given twice/);
  const systemObjectStillReads = systemObjectSchema.safeParse({ name: 'q', driver: 'qemu', disks: [{ pool: 'local', volume: 'd1' }, { pool: 'local', volume: 'd1' }] });
  t.true(systemObjectStillReads.success, 'a stored spec with it still reads');
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

test('sizes round up to whole 512-byte sectors, as qemu-img makes them', (t) => {
  t.is(sectorRounded(512), 512);
  t.is(sectorRounded(12345), 12800);
  t.is(sectorRounded(1), 512);
  t.is(sectorRounded(64 * 1024 ** 2), 64 * 1024 ** 2);
  t.is(sectorRounded(Number.MAX_SAFE_INTEGER - 511), Number.MAX_SAFE_INTEGER - 511);
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
  failed(t, await cli('system', 'disk', 'attach', 'q1', 'local/cd'), 1, 'ACP_ERR_STORAGE_WRONG_FORMAT', "volume 'local/cd' is an ISO image, not a disk", 'iso field', '--iso local/cd');
  t.deepEqual((await systemObject(api, 'q1'))?.disks, [], 'nothing refused was attached');
  t.deepEqual((await systemObject(api, 's1'))?.disks, []);
  // acp system create has the same checks, and writes nothing when one fails.
  failed(t, await cli('system', 'create', 'q2', '--disk', 'local/nope'), 1, 'ACP_ERR_STORAGE_NOT_FOUND', "no volume 'local/nope'");
  failed(t, await cli('system', 'create', 'q2', '--disk', 'nopool/x'), 1, 'ACP_ERR_STORAGE_NOT_FOUND', "no pool 'nopool'");
  failed(t, await cli('system', 'create', 'q2', '--disk', 'local/cd'), 1, 'ACP_ERR_STORAGE_WRONG_FORMAT', 'is an ISO image');
  failed(t, await cli('system', 'create', 'q2', '--iso', 'local/d1'), 1, 'ACP_ERR_STORAGE_WRONG_FORMAT', 'is a qcow2 disk image, not an ISO');
  failed(t, await cli('system', 'create', 's2', '--driver', 'sim', '--disk', 'local/d1'), 2, 'ACP_ERR_CLI_USAGE', "field 'disks': a simulated system");
  t.is(await systemObject(api, 'q2'), undefined);
  t.is(await systemObject(api, 's2'), undefined);
  t.is((await cli('system', 'create', 'q3', '--disk', 'local/d1', '--iso', 'local/cd')).code, 0);
  t.like(await systemObject(api, 'q3'), { disks: [{ pool: 'local', volume: 'd1' }], iso: { pool: 'local', volume: 'cd' } });
  t.is((await cli('system', 'disk', 'attach', 'q1', 'local/d1')).code, 0);
});

test.serial('acp system disk detach of the disk a system boots from drops that boot and says so (every start was refused after it)', async (t) => {
  t.timeout(120_000);
  const { api, cli } = await diskNode(t);
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/b1', value: { name: 'b1', driver: 'qemu', memoryMiB: 128, boot: { disk: 'local/d1' }, disks: [{ pool: 'local', volume: 'd1' }] } });
  const detached = await cli('system', 'disk', 'detach', 'b1', 'local/d1');
  t.is(detached.code, 0, detached.stderr);
  t.true(detached.stderr.includes('b1 no longer boots from local/d1 (its boot.disk): it boots from its remaining disks in order'), detached.stderr);
  const spec = (await systemObject(api, 'b1')) as { disks?: unknown[]; boot?: unknown } | undefined;
  t.deepEqual(spec?.disks, []);
  t.is(spec?.boot, undefined);
  // Another disk detached: the boot stays.
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/b2', value: { name: 'b2', driver: 'qemu', memoryMiB: 128, boot: { disk: 'local/d1' }, disks: [{ pool: 'local', volume: 'd1' }, { pool: 'local', volume: 'd2' }] } });
  const other = await cli('system', 'disk', 'detach', 'b2', 'local/d2');
  t.is(other.code, 0, other.stderr);
  t.false(other.stderr.includes('no longer boots'), other.stderr);
  t.like(await systemObject(api, 'b2'), { boot: { disk: 'local/d1' } });
});

// Read as the flags are parsed: no node needs to run.
test('a size or number flag given twice is a usage error naming it (--size reached its parser as an array: text.trim is not a function)', async (t) => {
  const home = makeHome(t);
  const cli = (...args: string[]) => runCli(args, home);
  failed(t, await cli('storage', 'volume', 'create', 'local/sp6', '--size', '64M', '--size', '128M'), 2, 'ACP_ERR_CLI_USAGE', '--size given twice; give it once');
  failed(t, await cli('storage', 'volume', 'resize', 'local/d1', '--size', '64M', '--size', '128M'), 2, 'ACP_ERR_CLI_USAGE', '--size given twice; give it once');
  failed(t, await cli('system', 'create', 'q4', '--memory', '256', '--memory', '512'), 2, 'ACP_ERR_CLI_USAGE', '--memory given twice; give it once');
  failed(t, await cli('system', 'stop', 'q1', '--timeout', '1', '--timeout', '2'), 2, 'ACP_ERR_CLI_USAGE', '--timeout given twice');
  failed(t, await cli('cdb', 'ls', 'object/', '--limit', '1', '--limit', '2', '--limit', '3'), 2, 'ACP_ERR_CLI_USAGE', '--limit given 3 times');
  failed(t, await cli('storage', 'share', 'create', 'f', '--type', 'sshfs', '--server', 'h', '--path', '/x', '--port', '22', '--port', '23'), 2, 'ACP_ERR_CLI_USAGE', '--port given twice');
});

test("a number flag that is none says what was given; a spec's bound is the field's own", async (t) => {
  const home = makeHome(t);
  const cli = (...args: string[]) => runCli(args, home);
  failed(t, await cli('system', 'create', 'h1', '--ha', '--max-restart', 'abc'), 2, 'ACP_ERR_CLI_USAGE', '--max-restart must be a whole number, not "abc"');
  failed(t, await cli('system', 'create', 'v1', '--vcpus', '1.5'), 2, 'ACP_ERR_CLI_USAGE', '--vcpus must be a whole number, not 1.5');
  failed(t, await cli('system', 'create', 'm1', '--spec', '{"memoryMiB":1e308}'), 2, 'ACP_ERR_CLI_USAGE', "field 'memoryMiB': must be a whole number from 16 to 16777216");
  failed(t, await cli('system', 'create', 'm2', '--memory', '99999999'), 2, 'ACP_ERR_CLI_USAGE', "field 'memoryMiB': must be a whole number from 16 to 16777216");
});

const noQemuImg = qemuImgMissing();

runsWhen(noQemuImg).serial('acp storage volume create and resize round a size up to whole 512-byte sectors, store what qemu-img made, and say so; volume ls names the node of each volume', async (t) => {
  t.timeout(120_000);
  const { api, home } = await systemNode(t);
  const dir = mkdtempSync(join(tmpdir(), 'acp-sectors-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  await api.ask('storage', { type: 'storage.pool-create', spec: { name: 'local', type: 'dir', path: join(dir, 'images') } });
  await eventually(async () => ((await api.ask<Message & { pools: Record<string, { state: string }> }>('storage', { type: 'storage.pool-status', name: 'local' })).pools['local']?.state === 'active' ? true : undefined), 10_000, 'the pool to be active');
  const volume = async () => (await api.ask<Message & { record: RecordView }>('cdb', { type: 'cdb.get', key: 'object/storage/volume/local/odd' })).record.value as { sizeBytes: number };
  const made = (file: string) => (JSON.parse(execFileSync('qemu-img', ['info', '--output=json', '-U', file], { encoding: 'utf8' })) as { 'virtual-size': number })['virtual-size'];

  const created = await runCli(['storage', 'volume', 'create', 'local/odd', '--size', '12345'], home);
  t.is(created.code, 0, created.stderr);
  t.true(created.stdout.includes('12345 bytes rounded up to 12800'), created.stdout);
  t.is((await volume()).sizeBytes, 12800);
  t.is(made(join(dir, 'images', 'odd.qcow2')), 12800);
  // qemu-img refuses to resize a qcow2 to a size that is not whole sectors: rounded, it works.
  const resized = await runCli(['storage', 'volume', 'resize', 'local/odd', '--size', '20001'], home);
  t.is(resized.code, 0, resized.stderr);
  t.true(resized.stdout.includes('20001 bytes rounded up to 20480'), resized.stdout);
  t.is((await volume()).sizeBytes, 20480);
  t.is(made(join(dir, 'images', 'odd.qcow2')), 20480);
  const even = await runCli(['storage', 'volume', 'resize', 'local/odd', '--size', '64K'], home);
  t.is(even.code, 0, even.stderr);
  t.false(even.stdout.includes('rounded'), even.stdout);
  // The listing names each volume's node; one written by hand with none, on a pool that is not shared, is not called shared.
  await api.ask('cdb', { type: 'cdb.put', key: 'object/storage/volume/local/ghost', value: { name: 'ghost', pool: 'local', sizeBytes: 512, format: 'raw' } });
  const listed = await runCli(['storage', 'volume', 'ls', 'local'], home);
  t.is(listed.code, 0, listed.stderr);
  t.regex(listed.stdout, /local\/odd +qcow2 +64K +n1 /);
  t.regex(listed.stdout, /local\/ghost +raw +512B? +\(unknown\) /);
});

test('--file reads a regular file, bounded: a device, a directory, a missing or an oversized file is a usage error, never a hang', (t) => {
  t.regex(usageError(t, () => systemSpec('z', { file: '/dev/zero' })).message, /--file \/dev\/zero: not a regular file/);
  t.regex(usageError(t, () => systemSpec('z', { file: '/tmp' })).message, /--file \/tmp: not a regular file/);
  t.regex(usageError(t, () => systemSpec('z', { file: '/nonexistent/spec.json' })).message, /cannot read --file \/nonexistent\/spec.json: ENOENT/);
  const dir = mkdtempSync(join(tmpdir(), 'acp-spec-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'big.json'), ' '.repeat(1024 * 1024 + 1));
  t.regex(usageError(t, () => systemSpec('z', { file: join(dir, 'big.json') })).message, /larger than 1048576 bytes/);
  writeFileSync(join(dir, 'ok.json'), JSON.stringify({ driver: 'sim', memoryMiB: 64 }));
  t.like(systemSpec('ok', { file: join(dir, 'ok.json') }), { name: 'ok', driver: 'sim', memoryMiB: 64 });
});
