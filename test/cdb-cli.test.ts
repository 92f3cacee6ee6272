import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { RecordView } from '../actors/cdb/index.js';
import type { NodeMeta, ServiceMeta } from '../actors/model.js';
import type { NodeStatus } from '../runtime/services.js';
import { CLI, eventually, makeHome, runCli, type CliResult } from './helpers/node.js';

const SERVICES = ['framework', 'cdb', 'agent', 'api', 'network', 'storage', 'hypervisor', 'monitor', 'ha', 'webapi'];

/** A home with a detached daemon on it (stopped by makeHome's teardown). */
async function up(t: ExecutionContext, config: Record<string, unknown> = {}, ...flags: string[]): Promise<string> {
  const home = makeHome(t);
  const file = join(home, 'config.json');
  writeFileSync(file, JSON.stringify({ ...(JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>), ...config }));
  const started = await runCli(['up', '--detach', ...flags], home);
  t.is(started.code, 0, started.stderr);
  return home;
}

function ok(t: ExecutionContext, result: CliResult, what: string): string {
  t.is(result.code, 0, `${what}: ${result.stderr}`);
  return result.stdout;
}

/** A failed command: its exit code and one line on stderr naming the error code. */
function failed(t: ExecutionContext, result: CliResult, exitCode: number, errorCode: string, what: string): void {
  t.is(result.code, exitCode, `${what}: ${result.stdout}${result.stderr}`);
  t.regex(result.stderr, new RegExp(`^acp: .*\\(${errorCode}\\)\\n$`), what);
  t.false(result.stderr.includes('    at '), `${what}: stack trace`);
}

const ndjson = <T>(text: string): T[] =>
  text
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => JSON.parse(line) as T);

test('cdb put, get, ls (NDJSON) and rm with --json; put --expect is a compare-and-set', async (t) => {
  const home = await up(t);
  const written = JSON.parse(ok(t, await runCli(['cdb', 'put', 'object/network/lan', '{"name":"lan","type":"bridge","mtu":1500}', '--json'], home), 'put')) as { type: string; key: string; version: string };
  t.like(written, { type: 'cdb.written', key: 'object/network/lan' });
  t.regex(written.version, /^\d+\.\d+@n1$/);
  ok(t, await runCli(['cdb', 'put', 'object/network/dmz', '{"name":"dmz","type":"vlan","vlan":20}'], home), 'put dmz');
  ok(t, await runCli(['cdb', 'put', 'object/system/vm1', '{"name":"vm1"}'], home), 'put vm1');

  const record = JSON.parse(ok(t, await runCli(['cdb', 'get', 'object/network/lan', '--json'], home), 'get')) as RecordView;
  t.deepEqual(record, { key: 'object/network/lan', value: { name: 'lan', type: 'bridge', mtu: 1500 }, version: written.version, origin: 'n1' });

  const listed = ndjson<RecordView>(ok(t, await runCli(['cdb', 'ls', 'object/network/', '--json'], home), 'ls'));
  t.deepEqual(
    listed.map((entry) => entry.key),
    ['object/network/dmz', 'object/network/lan'],
  );
  t.deepEqual(listed[0]?.value, { name: 'dmz', type: 'vlan', vlan: 20 });
  const limited = ndjson<RecordView>(ok(t, await runCli(['cdb', 'ls', 'object/', '--limit', '1', '--json'], home), 'ls --limit'));
  t.is(limited.length, 1);
  const table = ok(t, await runCli(['cdb', 'ls', 'object/network/'], home), 'ls (table)');
  t.regex(table, /^KEY\s+VERSION\s+VALUE\n/);
  t.regex(table, /object\/network\/lan\s+\d+\.\d+@n1\s+\{"name":"lan"/);
  // (object/storage/ itself holds the node's block devices, which the Storage service publishes.)
  t.is(ok(t, await runCli(['cdb', 'ls', 'object/storage/share/'], home), 'ls empty'), "no records under 'object/storage/share/'\n");
  t.is(ok(t, await runCli(['cdb', 'ls', 'object/storage/share/', '--json'], home), 'ls empty --json'), '');

  // Compare-and-set from the command line.
  const cas = JSON.parse(ok(t, await runCli(['cdb', 'put', 'object/network/lan', '{"name":"lan","type":"bridge","mtu":9000}', '--expect', written.version, '--json'], home), 'cas')) as { version: string };
  t.not(cas.version, written.version);
  failed(t, await runCli(['cdb', 'put', 'object/network/lan', '{"name":"lan","type":"bridge"}', '--expect', written.version], home), 1, 'ACP_ERR_CDB_CONFLICT', 'stale --expect');
  failed(t, await runCli(['cdb', 'put', 'object/network/lan', '{"name":"lan","type":"bridge"}', '--expect', 'none'], home), 1, 'ACP_ERR_CDB_CONFLICT', '--expect none on an existing key');
  ok(t, await runCli(['cdb', 'put', 'object/network/wan', '{"name":"wan","type":"bridge"}', '--expect', 'none'], home), '--expect none on a new key');

  const removed = JSON.parse(ok(t, await runCli(['cdb', 'rm', 'object/network/lan', '--json'], home), 'rm')) as { type: string; key: string };
  t.like(removed, { type: 'cdb.written', key: 'object/network/lan' });
  failed(t, await runCli(['cdb', 'get', 'object/network/lan'], home), 1, 'ACP_ERR_CDB_NOT_FOUND', 'get after rm');
  failed(t, await runCli(['cdb', 'rm', 'object/network/lan'], home), 1, 'ACP_ERR_CDB_NOT_FOUND', 'rm twice');
  t.deepEqual(
    ndjson<RecordView>(ok(t, await runCli(['cdb', 'ls', 'object/network/', '--json'], home), 'ls after rm')).map((entry) => entry.key),
    ['object/network/dmz', 'object/network/wan'],
  );
  // With --json an error is a JSON object on stdout.
  const jsonError = await runCli(['cdb', 'get', 'object/network/lan', '--json'], home);
  t.is(jsonError.code, 1);
  t.like(JSON.parse(jsonError.stdout) as { error: { code: string } }, { error: { code: 'ACP_ERR_CDB_NOT_FOUND' } });
});

test('a bad JSON value exits 2; an unknown type, a bad value or a foreign meta key exits 1 naming the code', async (t) => {
  const home = await up(t);
  failed(t, await runCli(['cdb', 'put', 'object/network/lan', '{name:lan}'], home), 2, 'ACP_ERR_CLI_BAD_JSON', 'bad JSON');
  const unknown = await runCli(['cdb', 'put', 'object/vm/a', '{"name":"a"}'], home);
  failed(t, unknown, 1, 'ACP_ERR_CDB_BAD_KEY', 'unknown type');
  t.regex(unknown.stderr, /unknown type 'vm'/);
  failed(t, await runCli(['cdb', 'get', 'object/vm/a'], home), 1, 'ACP_ERR_CDB_BAD_KEY', 'get of an unknown type');
  failed(t, await runCli(['cdb', 'ls', 'nope/'], home), 1, 'ACP_ERR_CDB_BAD_KEY', 'ls of a bad prefix');
  const badValue = await runCli(['cdb', 'put', 'object/network/v', '{"name":"v","type":"vlan"}'], home);
  failed(t, badValue, 1, 'ACP_ERR_CDB_BAD_VALUE', 'vlan without id');
  t.regex(badValue.stderr, /field 'vlan'/);
  failed(t, await runCli(['cdb', 'put', 'meta/node/x@other', '{}'], home), 1, 'ACP_ERR_CDB_NOT_OWNER', 'foreign meta');
  failed(t, await runCli(['cdb', 'ls', 'object/', '--limit', '0'], home), 2, 'ACP_ERR_CLI_USAGE', '--limit 0');
  // Nothing of it disturbed the CDB.
  const status = JSON.parse(ok(t, await runCli(['status', '--json'], home), 'status')) as { services: { name: string; restarts: number }[] };
  t.is(status.services.find((service) => service.name === 'cdb')?.restarts, 0);
});

test('acp nodes lists n1 up (this node); acp services lists its 9 services running', async (t) => {
  const home = await up(t);
  const nodes = JSON.parse(ok(t, await runCli(['nodes', '--json'], home), 'nodes')) as { name: string; state: string; incarnation: number; lastSeenMs: number }[];
  t.is(nodes.length, 1);
  t.like(nodes[0], { name: 'n1', state: 'up', self: true, lastSeenMs: 0 });
  t.true(typeof nodes[0]!.incarnation === 'number' && nodes[0]!.incarnation > 0);
  t.regex(ok(t, await runCli(['nodes'], home), 'nodes (table)'), /^NODE\s+STATE.*\nn1 \(this node\)\s+up\s/);

  const services = JSON.parse(ok(t, await runCli(['services', '--json'], home), 'services')) as (ServiceMeta & { service: string; node: string })[];
  t.deepEqual(
    services.map((service) => service.service).sort(),
    [...SERVICES].sort(),
  );
  for (const service of services) {
    t.is(service.node, 'n1', service.service);
    t.is(service.state, 'running', service.service);
    t.is(service.restarts, 0, service.service);
  }
  const table = ok(t, await runCli(['services'], home), 'services (table)');
  for (const name of SERVICES) t.regex(table, new RegExp(`\\n${name}\\s+n1\\s+running\\s+0\\s`), name);
});

interface WatchLine {
  event: 'snapshot' | 'put' | 'delete' | 'resubscribe' | 'retry';
  key?: string;
  seq?: number;
  value?: unknown;
  reason?: string;
}

/**
 * Runs `acp cdb watch <prefix> --json`; once its first line is out (the stream is live), runs
 * `during` and reads on for `ms` (or until `until` holds for the lines), then sends SIGINT.
 */
function watch(
  home: string,
  prefix: string,
  ms: number,
  during?: () => Promise<void>,
  until?: (lines: WatchLine[]) => boolean,
): Promise<{ code: number | null; signal: string | null; lines: WatchLine[]; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, '--home', home, 'cdb', 'watch', prefix, '--json'], { env: { ...process.env, ACP_HOME: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let live: number | undefined;
    let interrupted = false;
    let acted: Promise<void> = Promise.resolve();
    let actionDone = during === undefined;
    const lines = () => ndjson<WatchLine>(stdout.slice(0, stdout.lastIndexOf('\n') + 1));
    const interrupt = () => {
      if (interrupted) return;
      interrupted = true;
      child.kill('SIGINT');
    };
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      if (live === undefined && stdout.includes('\n')) {
        live = Date.now();
        if (during) {
          acted = during().then(
            () => {
              actionDone = true;
            },
            (error: unknown) => {
              interrupt();
              throw error;
            },
          );
          // Reported once the watch has exited (below).
          acted.catch(() => undefined);
        }
      }
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.on('error', reject);
    // Never wait forever: no output at all within 30 s ends the watch, and SIGKILL follows a SIGINT that is not obeyed.
    const spawned = Date.now();
    const poll = setInterval(() => {
      const now = Date.now();
      if (live === undefined ? now - spawned > 30_000 : now - live >= ms || (actionDone && until !== undefined && until(lines()))) interrupt();
    }, 50);
    const killer = setTimeout(() => child.kill('SIGKILL'), ms + 60_000);
    child.on('exit', (code, signal) => {
      clearInterval(poll);
      clearTimeout(killer);
      acted.then(() => resolve({ code, signal, lines: lines(), stderr }), reject);
    });
  });
}

test('acp cdb watch meta/ --json streams heartbeat lines as NDJSON and exits 0 on SIGINT', async (t) => {
  const home = await up(t, { heartbeatMs: 500 });
  const result = await watch(home, 'meta/', 2500);
  t.is(result.code, 0, `exit (signal ${result.signal}): ${result.stderr}`);
  t.is(result.stderr, '');
  const snapshot = result.lines.filter((line) => line.event === 'snapshot');
  t.true(snapshot.length > 0, 'a snapshot came first');
  t.true(result.lines.every((line) => line.key?.startsWith('meta/')), 'only meta/ keys');
  const beats = result.lines.filter((line) => line.event === 'put' && line.key === 'meta/node/n1@n1');
  t.true(beats.length >= 2, `${beats.length} heartbeat lines for meta/node/n1@n1`);
  const times = beats.map((line) => Date.parse((line.value as NodeMeta).heartbeatAt));
  for (let i = 1; i < times.length; i += 1) t.true(times[i - 1]! < times[i]!);
  // Services' meta is in the snapshot; an idle node then writes only its heartbeat (quiet meta).
  t.true(result.lines.some((line) => line.event === 'snapshot' && line.key === 'meta/service/cdb/n1@n1'));
  const servicePuts = result.lines.filter((line) => line.event === 'put' && line.key !== 'meta/node/n1@n1').map((line) => line.key);
  t.is(new Set(servicePuts).size, servicePuts.length, `a service's meta is written only when it changes: ${servicePuts.join(', ')}`);
  // Events are numbered without gaps, and the snapshot comes first.
  const seqs = result.lines.filter((line) => line.event === 'put').map((line) => line.seq);
  t.deepEqual(
    seqs,
    seqs.map((_, i) => i + 1),
  );
  const firstPut = result.lines.findIndex((line) => line.event === 'put');
  t.true(result.lines.slice(firstPut).every((line) => line.event !== 'snapshot'));
});

test('acp cdb watch prints puts and deletes, and resubscribes (saying so) when the CDB restarts', async (t) => {
  const home = await up(t, {}, '--faults');
  // A record to make the snapshot print a line: the watch is live once it is out.
  ok(t, await runCli(['cdb', 'put', 'object/network/pre', '{"name":"pre","type":"bridge"}'], home), 'put pre');
  const result = await watch(
    home,
    'object/network/',
    // A bound on liveness, not a speed check: on a loaded 2-core machine each CLI run takes seconds.
    40_000,
    async () => {
      ok(t, await runCli(['cdb', 'put', 'object/network/lan', '{"name":"lan","type":"bridge"}'], home), 'put');
      ok(t, await runCli(['cdb', 'rm', 'object/network/lan'], home), 'rm');
      const crashed = await runCli(['chaos', 'crash', 'cdb', '--json'], home);
      t.is(crashed.code, 0, crashed.stderr);
      await eventually(async () => {
        const status = JSON.parse((await runCli(['status', '--json'], home)).stdout) as NodeStatus;
        return status.services.some((service) => service.name === 'cdb' && service.state === 'running' && service.restarts === 1) ? true : undefined;
      }, 15_000, 'cdb restarted');
      // The watch resubscribes 200 ms after the end of its stream (500 ms more per retry).
      await new Promise((resolve) => setTimeout(resolve, 1000));
      ok(t, await runCli(['cdb', 'put', 'object/network/wan', '{"name":"wan","type":"bridge"}'], home), 'put after restart');
    },
    (lines) => lines.some((line) => line.key === 'object/network/wan'),
  );
  t.is(result.code, 0, result.stderr);
  // Retries (cdb not yet back) may come between; the new record arrives as a put, or in the new snapshot.
  const events = result.lines.filter((line) => line.event !== 'retry').map((line) => `${line.event} ${line.key ?? ''}`.trim());
  t.deepEqual(events.slice(0, 4), ['snapshot object/network/pre', 'put object/network/lan', 'delete object/network/lan', 'resubscribe']);
  // After resubscribing: a new snapshot of pre, and wan as a put (or in that snapshot, if it was quicker).
  t.is(events[4], 'snapshot object/network/pre', events.join(', '));
  t.deepEqual(
    events.slice(5).filter((line) => line !== 'snapshot object/network/wan' && line !== 'put object/network/wan'),
    [],
    events.join(', '),
  );
  t.true(events.slice(5).length === 1, events.join(', '));
  const resubscribe = result.lines.find((line) => line.event === 'resubscribe');
  t.truthy(resubscribe?.reason);
});
