import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { execHelperPid, execProgram } from '../adapters/exec.js';
import { isAlive } from './helpers/node.js';

const options = { timeoutMs: 5000, maxBuffer: 1024 * 1024 };

test.serial('a program runs in the exec helper, not in this process: its parent is the helper', async (t) => {
  const result = await execProgram('sh', ['-c', 'echo $PPID'], options);
  t.is(result.outcome, 'ok', result.message);
  const helper = execHelperPid();
  t.truthy(helper, 'a helper was started');
  t.not(helper, process.pid);
  t.is(Number(result.stdout.trim()), helper ?? -1);
});

test.serial('stdout, stderr and the extra environment come back; arguments reach the program as they are, never through a shell', async (t) => {
  const result = await execProgram('sh', ['-c', 'printf "%s|%s" "$1" "$ACP_TEST_VALUE"; echo oops >&2', 'sh', '$(touch /tmp/acp-exec-injected); *'], { ...options, env: { ACP_TEST_VALUE: 'given' } });
  t.is(result.outcome, 'ok');
  t.is(result.stdout, '$(touch /tmp/acp-exec-injected); *|given');
  t.is(result.stderr, 'oops\n');
});

test.serial('a missing program, a failing one and one past its timeout are told apart', async (t) => {
  t.is((await execProgram('/nonexistent/acp-no-such-tool', [], options)).outcome, 'missing');
  const failed = await execProgram('sh', ['-c', 'echo bad input >&2; exit 3'], options);
  t.is(failed.outcome, 'failed');
  t.is(failed.stderr, 'bad input\n');
  t.regex(failed.message, /Command failed/);
  const slow = await execProgram('sleep', ['5'], { ...options, timeoutMs: 200, killSignal: 'SIGKILL' });
  t.is(slow.outcome, 'timeout');
});

test.serial('when the helper dies, what it had in hand is answered as failed (it may have run), never run twice; the next call gets a new helper', async (t) => {
  await execProgram('true', [], options);
  const first = execHelperPid()!;
  const marker = join(mkdtempSync(join(tmpdir(), 'acp-exec-')), 'runs');
  const inHand = execProgram('sh', ['-c', `echo run >> ${marker}; sleep 0.3`], options);
  await new Promise((resolve) => setTimeout(resolve, 100));
  process.kill(first, 'SIGKILL');
  const result = await inHand;
  t.is(result.outcome, 'failed');
  t.regex(result.message, new RegExp(`exec helper \\(pid ${first}\\) exited while running sh -c .*; whether it ran is unknown`));
  await new Promise((resolve) => setTimeout(resolve, 1100));
  t.is(readFileSync(marker, 'utf8'), 'run\n', 'it ran once, in the helper, and not again here');
  const again = await execProgram('sh', ['-c', 'echo $PPID'], options);
  const second = execHelperPid();
  t.truthy(second);
  t.not(second, first);
  t.is(Number(again.stdout.trim()), second ?? -1);
});

test.serial('the helper outlives a SIGTERM to it (the process group gets one at a clean stop)', async (t) => {
  await execProgram('true', [], options);
  const helper = execHelperPid()!;
  process.kill(helper, 'SIGTERM');
  await new Promise((resolve) => setTimeout(resolve, 200));
  const result = await execProgram('sh', ['-c', 'echo $PPID'], options);
  t.is(Number(result.stdout.trim()), helper, 'the same helper answers');
});

test.serial('the helper goes when its parent is killed (kill -9)', async (t) => {
  const exec = fileURLToPath(new URL('../adapters/exec.js', import.meta.url));
  const script = `import(${JSON.stringify(exec)}).then(async (m) => { await m.execProgram('true', [], { timeoutMs: 5000, maxBuffer: 1e6 }); console.log(m.execHelperPid()); setInterval(() => undefined, 1000); });`;
  const parent = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const helper = await new Promise<number>((resolve) => parent.stdout.once('data', (chunk: Buffer) => resolve(Number(chunk.toString().trim()))));
  t.true(isAlive(helper));
  parent.kill('SIGKILL');
  const deadline = Date.now() + 5000;
  while (isAlive(helper) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  t.false(isAlive(helper), `helper ${helper} is gone`);
});
