import test from 'ava';
import { execHelperPid, execProgram } from '../adapters/exec.js';

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

test.serial('when the helper dies, what it had in hand is run here instead, and the next call gets a new helper', async (t) => {
  await execProgram('true', [], options);
  const first = execHelperPid()!;
  const inHand = execProgram('sh', ['-c', 'sleep 0.3; echo done'], options);
  await new Promise((resolve) => setTimeout(resolve, 100));
  process.kill(first, 'SIGKILL');
  const result = await inHand;
  t.is(result.outcome, 'ok');
  t.is(result.stdout, 'done\n', 'run again, here');
  await new Promise((resolve) => setTimeout(resolve, 1100));
  const again = await execProgram('sh', ['-c', 'echo $PPID'], options);
  const second = execHelperPid();
  t.truthy(second);
  t.not(second, first);
  t.is(Number(again.stdout.trim()), second ?? -1);
});
