/**
 * What an operator meets in the first hour: the foreground summary and readable logs on a
 * terminal, `acp up --detach` that is up or leaves nothing behind, `acp logs` and `acp system log`.
 */
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import test from 'ava';
import { CLI, isAlive, makeHome, runCli } from './helpers/node.js';
import { formatUpSummary } from '../cli/control.js';
import { runsWhen } from './helpers/requires.js';

function scriptMissing(): string | undefined {
  try {
    execFileSync('script', ['--version'], { stdio: 'ignore' });
    return undefined;
  } catch {
    return 'script (util-linux) is not installed, so no terminal can be faked';
  }
}

const ok = (result: { code: number; stderr: string }, what: string) => {
  if (result.code !== 0) throw new Error(`${what} exited ${result.code}: ${result.stderr}`);
};

runsWhen(scriptMissing())('acp up in a terminal prints a summary (node, socket, web address, what next) and readable log lines, not JSON', async (t) => {
  const home = makeHome(t);
  // `script` gives the daemon a terminal. Once the summary is out, SIGINT stops it as Ctrl-C
  // would; `timeout` is only the backstop for a daemon that never gets there.
  const child = spawn('script', ['-qec', `timeout -s INT 90 ${process.execPath} ${CLI} --home ${home} up`, '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let interrupted = false;
  child.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString('utf8');
    const pid = /acpd is running: .*\(pid (\d+)\)[^]*Ctrl-C stops it/.exec(output)?.[1];
    if (pid !== undefined && !interrupted) {
      interrupted = true;
      process.kill(Number(pid), 'SIGINT');
    }
  });
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
  // eslint-disable-next-line no-control-regex
  const plain = output.replace(/\x1b\[[0-9;]*m/g, '');
  t.true(code === 0 || code === 124, `exit ${code}: ${plain}`);
  t.regex(plain, /acpd is running: node n1 of cluster lab/);
  t.regex(plain, /socket {2}\S+acp\.sock/);
  t.regex(plain, /web {5}http:\/\/127\.0\.0\.1:\d+\//);
  t.regex(plain, /next {4}in another terminal: acp status/);
  t.regex(plain, /\] INFO: cdb: store open/, 'log lines are readable');
  t.false(/^\{"level"/m.test(plain), 'no JSON log lines on a terminal');
  t.regex(plain, /acpd stopped/);
});

test('the foreground summary says how to run acp from another terminal and does not send you to acp logs, which reads only a detached daemon\'s log', (t) => {
  const summary = formatUpSummary({ cluster: 'lab', node: 'n1', pid: 42, socket: '/h/run/acp.sock', web: 'http://127.0.0.1:8480/', failed: [] });
  t.notRegex(summary, /next .*acp logs/);
  t.regex(summary, /logs {4}here, below \(acp logs reads the log of a daemon started with acp up --detach\)/);
  t.true(summary.includes(`acp     node ${CLI} (or npm link`), summary);
});

test('acp up --detach that cannot start exits 1 naming why and leaves no daemon behind', async (t) => {
  const home = makeHome(t);
  const busy = createServer();
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
  t.teardown(() => busy.close());
  const port = (busy.address() as { port: number }).port;
  const result = await runCli(['up', '--detach', '--web-port', String(port)], home, 120_000);
  t.is(result.code, 1);
  t.regex(result.stderr, /webapi/);
  t.regex(result.stderr, /--web-port/);
  t.regex(result.stderr, /the daemon was stopped/);
  const status = await runCli(['status'], home);
  t.is(status.code, 1, 'nothing answers on the home');
  let pids = '';
  try {
    pids = execFileSync('pgrep', ['-f', '--', `--home ${home} up`], { encoding: 'utf8' }).trim();
  } catch {
    // pgrep exits 1 when nothing matches: what we want.
  }
  t.is(pids.split('\n').filter((pid) => pid && isAlive(Number(pid)) && Number(pid) !== process.pid).length, 0, 'no acpd left running');
});

test('acp logs filters by service, level and time, prints JSON with --json, and refuses a bad --since; acp system log shows the lifecycle', async (t) => {
  const home = makeHome(t);
  ok(await runCli(['up', '--detach'], home, 60_000), 'up');
  ok(await runCli(['system', 'create', 'dev1', '--driver', 'sim'], home), 'create');
  ok(await runCli(['system', 'start', 'dev1'], home), 'start');
  ok(await runCli(['system', 'stop', 'dev1'], home), 'stop');

  const cdb = await runCli(['logs', '--service', 'cdb', '--json'], home);
  ok(cdb, 'logs --service cdb');
  const entries = cdb.stdout.trim().split('\n').map((line) => JSON.parse(line) as { path: string; level: number });
  t.true(entries.length > 0);
  t.true(entries.every((entry) => entry.path.endsWith('/cdb') || entry.path.includes('/cdb/')));
  const warnings = await runCli(['logs', '--level', 'error', '--json'], home);
  ok(warnings, 'logs --level error');
  t.true(warnings.stdout.trim().split('\n').filter(Boolean).every((line) => (JSON.parse(line) as { level: number }).level >= 50));
  const future = await runCli(['logs', '--since', '2999-01-01T00:00:00Z'], home);
  t.is(future.stdout, '');
  const two = await runCli(['logs', '--lines', '2', '--json'], home);
  ok(two, 'logs --lines 2 --json');
  t.is(two.stdout.trim().split('\n').length, 2);
  const readable = await runCli(['logs', '--lines', '2'], home);
  ok(readable, 'logs --lines 2');
  t.regex(readable.stdout, /^\[\d\d:\d\d:\d\d\.\d{3}\] [A-Z]+/m);
  const bad = await runCli(['logs', '--since', 'yesterday'], home);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /neither a duration/);

  const log = await runCli(['--json', 'system', 'log', 'dev1'], home);
  ok(log, 'system log');
  const steps = JSON.parse(log.stdout) as { event: string; state: string; node: string }[];
  t.deepEqual(steps.map((step) => `${step.event}>${step.state}`), ['start>starting', 'started>running', 'stop>stopping', 'stopped>stopped']);
  t.true(steps.every((step) => step.node === 'n1'));
});

test('a second node on one machine takes the next free web port when its configured one is taken, and says where', async (t) => {
  const home = makeHome(t);
  const busy = createServer();
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
  t.teardown(() => busy.close());
  const port = (busy.address() as { port: number }).port;
  const config = JSON.parse(readFileSync(join(home, 'config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(home, 'config.json'), JSON.stringify({ ...config, webapi: { host: '127.0.0.1', port } }));
  const up = await runCli(['--json', 'up', '--detach'], home, 60_000);
  ok(up, 'up');
  const web = (JSON.parse(up.stdout) as { web: string }).web;
  t.not(new URL(web).port, String(port));
  t.true(Number(new URL(web).port) > port && Number(new URL(web).port) <= port + 20, web);
  const warned = await runCli(['logs', '--level', 'warn'], home);
  t.regex(warned.stdout, new RegExp(`web port ${port} is taken; listening on ${new URL(web).port}`));
});
