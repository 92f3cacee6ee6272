import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import type { ServiceInfo } from '../actors/kit.js';
import type { Pong } from '../runtime/messages.js';
import type { NodeStatus } from '../runtime/services.js';
import { logEntries } from './helpers/log.js';
import { CLI, client, eventually, makeHome, runCli, type CliResult, isAlive } from './helpers/node.js';

/** The services `acp status` lists, in boot order after the Framework. */
const SERVICES = ['framework', 'cdb', 'agent', 'api', 'network', 'storage', 'hypervisor', 'monitor', 'ha', 'webapi'] as const;


function parseJson<T>(t: ExecutionContext, result: CliResult, what: string): T {
  try {
    return JSON.parse(result.stdout) as T;
  } catch (error) {
    t.fail(`${what} --json did not print JSON (${(error as Error).message}): ${result.stdout}${result.stderr}`);
    throw error;
  }
}

/** `acp up --detach` (plus flags) that must succeed; returns the node's status as `acp status --json` reports it. */
async function up(t: ExecutionContext, home: string, ...flags: string[]): Promise<NodeStatus> {
  const result = await runCli(['up', '--detach', ...flags], home);
  t.is(result.code, 0, `up --detach failed: ${result.stderr}`);
  return status(t, home);
}

async function status(t: ExecutionContext, home: string): Promise<NodeStatus> {
  const result = await runCli(['status', '--json'], home);
  t.is(result.code, 0, `status failed: ${result.stderr}`);
  return parseJson<NodeStatus>(t, result, 'status');
}

/** A CLI error: the exit code, and one line on standard error without a stack trace. */
function assertOneLineError(t: ExecutionContext, result: CliResult, code: number, what: string): void {
  t.is(result.code, code, `${what}: exit code (stderr: ${result.stderr})`);
  t.false(result.stderr.includes('    at '), `${what}: stack trace on stderr: ${result.stderr}`);
  t.is(result.stderr.trimEnd().split('\n').length, 1, `${what}: stderr is not one line: ${result.stderr}`);
  t.regex(result.stderr, /^acp: .*\(ACP_ERR_[A-Z_]+\)\n$/, `${what}: stderr`);
}

async function serviceInfos(t: ExecutionContext, home: string): Promise<Map<string, ServiceInfo>> {
  const connection = await client(t, home);
  const infos = new Map<string, ServiceInfo>();
  for (const name of SERVICES) infos.set(name, await connection.ask<ServiceInfo>(name, { type: 'service.info' }));
  await connection.close();
  return infos;
}

test('up --detach prints the socket; status lists every service running in boot order; ask, tell and down speak JSON', async (t) => {
  const home = makeHome(t);
  const socket = join(home, 'run', 'acp.sock');
  const started = await runCli(['up', '--detach'], home);
  t.is(started.code, 0, started.stderr);
  t.true(started.stdout.split('\n').includes(socket), `up did not print the socket path: ${started.stdout}`);

  const node = await status(t, home);
  t.is(node.cluster, 'lab');
  t.is(node.node, 'n1');
  t.is(node.socket, socket);
  t.false(node.booting);
  t.true(isAlive(node.pid));
  t.deepEqual(
    node.services.map((service) => service.name),
    [...SERVICES],
  );
  for (const service of node.services) {
    t.is(service.state, 'running', service.name);
    t.is(service.pid, node.pid, service.name);
    t.is(service.isolation, 'inline', service.name);
    t.is(service.path, `acp://lab/n1/${service.name}`);
  }
  t.true(started.stdout.includes(`pid ${node.pid}`), started.stdout);

  const asked = await runCli(['ask', 'acp://lab/n1/framework', '{"type":"ping"}'], home);
  t.is(asked.code, 0, asked.stderr);
  const pong = JSON.parse(asked.stdout) as Pong;
  t.is(pong.type, 'pong');
  t.is(pong.path, 'acp://lab/n1/framework');
  t.is(pong.incarnation, node.incarnation);

  const askedJson = await runCli(['ask', 'cdb', '{"type":"ping"}', '--json'], home);
  t.is(askedJson.code, 0, askedJson.stderr);
  t.like(parseJson<Pong>(t, askedJson, 'ask'), { type: 'pong', path: 'acp://lab/n1/cdb', generation: 1 });

  const told = await runCli(['tell', 'cdb', '{"type":"service.info"}', '--json'], home);
  t.is(told.code, 0, told.stderr);
  t.deepEqual(parseJson<{ accepted: boolean }>(t, told, 'tell'), { accepted: true });

  const down = await runCli(['down', '--json'], home);
  t.is(down.code, 0, down.stderr);
  // With what it leaves behind: no guests here, and the node's shutdown policy for HA systems.
  t.deepEqual(parseJson<{ stopped: boolean; pid: number | null }>(t, down, 'down'), {
    stopped: true,
    pid: node.pid,
    guests: { guests: [], simulated: [], ha: [], stopped: [], failed: [], shutdownPolicy: 'conditional' },
  });
  t.false(isAlive(node.pid));
});

test('a second up on a live home exits 1 naming the pid; down ends the process and removes pidfile and socket', async (t) => {
  const home = makeHome(t);
  const first = await runCli(['up', '--detach', '--json'], home);
  t.is(first.code, 0, first.stderr);
  const started = parseJson<{ pid: number; socket: string; cluster: string; node: string; incarnation: number }>(t, first, 'up');
  t.like(started, { cluster: 'lab', node: 'n1', socket: join(home, 'run', 'acp.sock') });
  t.true(Number.isInteger(started.pid) && started.pid > 0);

  const second = await runCli(['up', '--detach'], home);
  assertOneLineError(t, second, 1, 'second up');
  t.true(second.stderr.includes(`pid ${started.pid}`), second.stderr);
  t.true(second.stderr.includes('ACP_ERR_DAEMON_RUNNING'), second.stderr);
  // The refused start did not disturb the running daemon.
  t.is((await status(t, home)).pid, started.pid);

  const down = await runCli(['down'], home);
  t.is(down.code, 0, down.stderr);
  t.true(down.stdout.includes(`${started.pid}`), down.stdout);
  t.throws(() => process.kill(started.pid, 0));
  t.false(existsSync(join(home, 'run', 'acpd.pid')), 'pidfile left behind');
  t.false(existsSync(join(home, 'run', 'acp.sock')), 'socket left behind');
});

test('up after the daemon was SIGKILLed cleans the stale pidfile and socket and starts a new incarnation', async (t) => {
  const home = makeHome(t);
  const before = await up(t, home);
  process.kill(before.pid, 'SIGKILL');
  await eventually(() => (isAlive(before.pid) ? undefined : true), 15_000, 'the killed daemon to be gone');
  t.true(existsSync(join(home, 'run', 'acpd.pid')), 'a killed daemon leaves its pidfile');
  t.true(existsSync(join(home, 'run', 'acp.sock')), 'a killed daemon leaves its socket');

  const after = await up(t, home);
  t.not(after.pid, before.pid);
  t.not(after.incarnation, before.incarnation);
  t.true(after.services.every((service) => service.state === 'running'));
  t.is(readFileSync(join(home, 'run', 'acpd.pid'), 'utf8').trim(), String(after.pid));
});

test('the home keeps its secrets private: run/ 0700, the socket 0600, the API key 0600', async (t) => {
  const home = makeHome(t);
  await up(t, home);
  const mode = (file: string) => statSync(join(home, file)).mode & 0o777;
  t.is(mode('run'), 0o700);
  t.is(mode('run/acp.sock'), 0o600);
  t.is(mode('secrets/api.key'), 0o600);
});

test('a detached daemon logs JSON lines to log/acpd.log', async (t) => {
  const home = makeHome(t);
  const node = await up(t, home);
  const file = join(home, 'log', 'acpd.log');
  t.true(existsSync(file));
  const lines = logEntries<{ msg?: string; pid?: number; incarnation?: number }>(file);
  const started = lines.find((line) => line.msg === 'acpd started');
  t.truthy(started, 'no "acpd started" line');
  t.is(started?.pid, node.pid);
  t.is(started?.incarnation, node.incarnation);
});

test('with --faults, chaos crash restarts only the crashed service; chaos stall answers', async (t) => {
  const home = makeHome(t);
  const node = await up(t, home, '--faults');
  t.true(node.faults);
  const before = await serviceInfos(t, home);
  t.is(before.get('cdb')?.generation, 1);

  const crash = await runCli(['chaos', 'crash', 'cdb'], home);
  t.is(crash.code, 0, crash.stderr);
  t.true(crash.stdout.includes('acp://lab/n1/cdb'), crash.stdout);

  const after = await eventually(
    async () => {
      const current = await status(t, home);
      const cdb = current.services.find((service) => service.name === 'cdb');
      return cdb?.state === 'running' && cdb.restarts === 1 ? current : undefined;
    },
    15_000,
    'cdb to run again after its restart',
  );
  t.is(after.pid, node.pid);
  t.is(after.incarnation, node.incarnation);
  for (const service of after.services) {
    if (service.name === 'cdb') continue;
    t.is(service.state, 'running', service.name);
    t.is(service.restarts, 0, `${service.name} was restarted by a crash of cdb`);
  }
  const infos = await serviceInfos(t, home);
  t.is(infos.get('cdb')?.generation, 2);
  for (const name of SERVICES) {
    if (name === 'cdb') continue;
    t.is(infos.get(name)?.generation, before.get(name)?.generation, `${name} generation changed`);
    t.is(infos.get(name)?.startedAt, before.get(name)?.startedAt, `${name} was started again`);
  }

  const stall = await runCli(['chaos', 'stall', 'cdb', '--ms', '500'], home);
  t.is(stall.code, 0, stall.stderr);
  t.true(stall.stdout.includes('acp://lab/n1/cdb'), stall.stdout);
});

test('without --faults, chaos crash exits 1 and says to use --faults', async (t) => {
  const home = makeHome(t);
  await up(t, home);
  const crash = await runCli(['chaos', 'crash', 'cdb'], home);
  assertOneLineError(t, crash, 1, 'chaos crash without --faults');
  t.true(crash.stderr.includes('--faults'), crash.stderr);
  t.true(crash.stderr.includes('ACP_ERR_FAULTS_DISABLED'), crash.stderr);
  const node = await status(t, home);
  t.is(node.services.find((service) => service.name === 'cdb')?.restarts, 0);
});

test('errors exit 2 for usage and 1 for the node, each as one line without a stack trace', async (t) => {
  const home = makeHome(t);
  await up(t, home);
  const cases: { args: string[]; code: number; includes: string; what: string }[] = [
    { args: ['ask', 'framework', '{"type":'], code: 2, includes: 'ACP_ERR_CLI_BAD_JSON', what: 'bad JSON' },
    { args: ['ask', 'framework', '[1]'], code: 2, includes: 'ACP_ERR_CLI_BAD_JSON', what: 'JSON that is not a message' },
    { args: ['ask', 'acp://Bad/x/y', '{"type":"ping"}'], code: 2, includes: 'ACP_ERR_PATH_INVALID', what: 'bad path' },
    { args: ['frobnicate'], code: 2, includes: 'ACP_ERR_CLI_USAGE', what: 'unknown command' },
    { args: ['ask', 'framework', '{"type":"ping"}', '--timeout', '-1'], code: 2, includes: '--timeout', what: 'negative timeout' },
    { args: ['ask', 'nobody-here', '{"type":"ping"}'], code: 1, includes: 'ACP_ERR_NO_SUCH_ACTOR', what: 'no actor at the path' },
    { args: ['ask', 'framework', '{"type":"status","x":1}'], code: 1, includes: 'ACP_ERR_SCHEMA_REJECTED', what: 'schema rejects' },
    // yargs writes these over two lines ("Invalid values:\n  Argument: ..."): still one line here.
    { args: ['system', 'create', 'x', '--driver', 'nope'], code: 2, includes: 'Argument: driver, Given: "nope"', what: 'a value not among the choices' },
    { args: ['system', 'create', 'x', '--bogus-flag'], code: 2, includes: 'Unknown argument: bogus-flag;', what: 'an unknown flag, named once' },
    { args: ['system', 'start'], code: 2, includes: "acp system start: 1 argument needed, 0 given; 'acp system start --help' names it", what: 'a missing argument, with the command named' },
    { args: ['storage', 'volume', 'create', 'local/big', '--size', '-1M'], code: 2, includes: '-1M after --size was read as flags, not as its value: write --size=-1M', what: 'a negative value yargs reads as flags' },
    { args: ['ask', 'framework', '{"type":"ping"}', '--timeout', 'abc'], code: 2, includes: 'not "abc"', what: 'a timeout that is no number, quoted' },
    { args: ['up', '--web-port', 'abc'], code: 2, includes: '--web-port must be a port number (0-65535), not "abc"', what: 'a web port that is no number, quoted' },
    { args: ['ui', 'revoke', 'no-such-session'], code: 1, includes: "ACP_ERR_WEB_SESSION_NOT_FOUND", what: 'revoking a web session that does not exist' },
    { args: ['--home', '/tmp/elsewhere', 'status'], code: 2, includes: '--home given twice; give it once', what: '--home twice (runCli gives one)' },
    // Checked before anything stops: the node is still up for the checks below.
    { args: ['down', '--timeout', 'abc'], code: 2, includes: 'nothing was stopped', what: 'down with a bad --timeout' },
    { args: ['down', '--stop-systems=maybe'], code: 2, includes: "--stop-systems is a switch: give it alone (or =true, =false), not 'maybe'", what: 'a switch given a value yargs would read as false' },
  ];
  for (const { args, code, includes, what } of cases) {
    const result = await runCli(args, home);
    assertOneLineError(t, result, code, what);
    t.true(result.stderr.includes(includes), `${what}: ${result.stderr}`);
    t.is(result.stdout, '', `${what}: stdout`);
  }
  const emptyHome = spawnSync(process.execPath, [CLI, '--home', '', 'status'], { encoding: 'utf8', timeout: 60_000 });
  assertOneLineError(t, { code: emptyHome.status ?? 1, stdout: emptyHome.stdout, stderr: emptyHome.stderr }, 2, 'an empty --home, which would be the current directory');
  t.true(emptyHome.stderr.includes('--home needs a directory'), emptyHome.stderr);
  // An empty token (`--token "$T"` with T unset) is an error, not the home's API key, which is an admin's.
  for (const [args, env, includes] of [
    [['--token', '', 'token', 'api', 'ls'], {}, "--token is empty: give an API token (acp token api create), or leave --token out to speak with the home's API key"],
    [['--token=', 'status'], {}, '--token is empty'],
    [['token', 'api', 'ls'], { ACP_TOKEN: '' }, "ACP_TOKEN is set but empty: set it to an API token, or unset it to speak with the home's API key"],
  ] as const) {
    const result = spawnSync(process.execPath, [CLI, '--home', home, ...args], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ACP_HOME: '', ...env } });
    assertOneLineError(t, { code: result.status ?? 1, stdout: result.stdout, stderr: result.stderr }, 2, args.join(' '));
    t.true(result.stderr.includes(includes), result.stderr);
    t.is(result.stdout, '', `${args.join(' ')}: nothing listed`);
  }
  // acp down --stop-systems with a token stops the systems as that token's role: an auditor's is refused, and nothing stops.
  const auditor = await runCli(['token', 'api', 'create', '--role', 'auditor', '--json'], home);
  const auditorToken = (JSON.parse(auditor.stdout) as { secret: string }).secret;
  t.is((await runCli(['system', 'create', 'd1', '--driver', 'sim'], home)).code, 0);
  t.is((await runCli(['system', 'start', 'd1'], home)).code, 0);
  const refusedDown = await runCli(['--token', auditorToken, 'down', '--stop-systems'], home);
  t.is(refusedDown.code, 1, refusedDown.stderr);
  t.regex(refusedDown.stderr, /ACP_ERR_AUTH_FORBIDDEN/);
  t.regex((await runCli(['system', 'show', 'd1'], home)).stdout, /running/);
  t.is((await runCli(['system', 'stop', 'd1'], home)).code, 0);
  // The daemon took none of it badly.
  t.true((await status(t, home)).services.every((service) => service.state === 'running' && service.restarts === 0));
});

test('status with no daemon running exits 1 with one line', async (t) => {
  const home = makeHome(t);
  const result = await runCli(['status'], home);
  assertOneLineError(t, result, 1, 'status without a daemon');
  t.regex(result.stderr, /ACP_ERR_DAEMON_NOT_RUNNING|ACP_ERR_NODE_UNREACHABLE/);
});

test('tell answers 0 once accepted; a tell of an unknown type exits 1 naming the accepted types', async (t) => {
  const home = makeHome(t);
  await up(t, home);
  const told = await runCli(['tell', 'cdb', '{"type":"service.info"}'], home);
  t.is(told.code, 0, told.stderr);
  t.is(told.stdout, '');

  const refused = await runCli(['tell', 'cdb', '{"type":"cdb.frobnicate"}'], home);
  assertOneLineError(t, refused, 1, 'tell of an unknown type');
  t.true(refused.stderr.includes('ACP_ERR_UNKNOWN_MESSAGE'), refused.stderr);
  t.true(refused.stderr.includes('cdb.frobnicate'), refused.stderr);
  for (const accepted of ['service.info', 'ping']) t.true(refused.stderr.includes(accepted), `does not name '${accepted}': ${refused.stderr}`);
});

test('down when no daemon runs exits 0 and says it is not running', async (t) => {
  const home = makeHome(t);
  const result = await runCli(['down'], home);
  t.is(result.code, 0, result.stderr);
  t.regex(result.stdout, /not running/);
  const json = await runCli(['down', '--json'], home);
  t.is(json.code, 0, json.stderr);
  t.deepEqual(JSON.parse(json.stdout) as unknown, { stopped: false, pid: null });
});

test('a streaming command whose reader goes away (acp cdb watch meta/ | head -1) ends quietly, without a stack trace', async (t) => {
  const home = makeHome(t);
  await up(t, home);
  const child = spawn(process.execPath, [CLI, '--home', home, 'cdb', 'watch', 'meta/'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  // As `head -1` does: read the first chunk, then close the pipe; heartbeats keep the watch writing.
  child.stdout.once('data', () => child.stdout.destroy());
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('exit', (exitCode, exitSignal) => resolve([exitCode, exitSignal])));
  clearTimeout(timer);
  t.is(signal, null, `killed: it did not end by itself once its reader left (stderr: ${stderr})`);
  t.is(code, 0, `exit code (stderr: ${stderr})`);
  t.false(stderr.includes('EPIPE'), stderr);
  t.false(stderr.includes('    at '), stderr);
});
