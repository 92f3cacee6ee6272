import { execFileSync } from 'node:child_process';
import { Harness, harnessAvailable } from '../node/harness/index.js';
import { isGone } from '../node/harness/net.js';
import { eventually } from './helpers/node.js';
import type { NodeStatus } from '../runtime/services.js';
import { runsWhen } from './helpers/requires.js';

const available = harnessAvailable();

// A skipped test's body never runs: the reason goes in its title, where ava prints it.
const title = `a 3-node harness on network namespaces: reach, partition, heal, kill, restart, teardown${available.ok ? '' : ` (skipped: ${available.why})`}`;

runsWhen(!available.ok && available.why)(title, async (t) => {
  if (!available.ok) t.log(`skipped: ${available.why}`);
  t.timeout(120_000);
  const started = Date.now();
  const h = await Harness.start({ nodes: ['n1', 'n2', 'n3'] });
  t.teardown(() => h.teardown());
  t.log(`3 nodes started in ${Date.now() - started} ms`);

  // Every daemon answers on its own socket, as its own node, from its own namespace's address.
  for (const node of h.nodes) {
    const status = await (await h.client(node.name)).ask<NodeStatus>('framework', { type: 'status' }, { timeoutMs: 5000 });
    t.is(status.node, node.name);
    t.is(status.pid, node.pid);
  }
  t.deepEqual(
    h.nodes.map((node) => node.address),
    ['10.77.1.11', '10.77.1.12', '10.77.1.13'],
  );

  // The nodes reach each other over their agents.
  const viaN2 = await (await h.client('n2')).ask<NodeStatus>('acp://lab/n1/framework', { type: 'status' }, { timeoutMs: 10_000 });
  t.is(viaN2.node, 'n1');
  const n1 = await h.client('n1');
  const askN3 = (timeoutMs: number) => n1.ask<NodeStatus>('acp://lab/n3/framework', { type: 'status' }, { timeoutMs });
  t.is((await eventually(() => askN3(5000), 20_000, 'n1 to reach n3')).node, 'n3');

  // Cut off, n3 does not answer n1; healed, it does again.
  await h.partition('n3');
  await t.throwsAsync(askN3(2000));
  await h.heal('n3');
  t.is((await eventually(() => askN3(3000), 30_000, 'n1 to reach n3 after heal')).node, 'n3');

  // SIGKILL then `acp up` again: a new process, which answers locally and over the agent.
  const oldPid = h.node('n2').pid;
  await h.kill('n2');
  t.true(isGone(oldPid));
  await h.restart('n2');
  t.not(h.node('n2').pid, oldPid);
  const restarted = await (await h.client('n2')).ask<NodeStatus>('framework', { type: 'status' }, { timeoutMs: 5000 });
  t.is(restarted.pid, h.node('n2').pid);
  t.is((await eventually(() => n1.ask<NodeStatus>('acp://lab/n2/framework', { type: 'status' }, { timeoutMs: 3000 }), 30_000, 'n1 to reach the restarted n2')).node, 'n2');

  // The CLI runs inside a node's namespace.
  const ran = await h.cli('n3', ['status', '--json']);
  t.is(ran.code, 0, ran.stderr);

  // Teardown leaves no namespace and no daemon behind; a second teardown is harmless.
  const pids = h.nodes.map((node) => node.pid);
  await h.teardown();
  await h.teardown();
  const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .filter((line) => line.startsWith(`acph-${process.pid}-`));
  t.deepEqual(left, []);
  for (const pid of pids) t.true(isGone(pid), `pid ${pid} still alive`);
});
