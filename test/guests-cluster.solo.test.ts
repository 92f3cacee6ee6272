/**
 * Honest state across nodes: a system on a node that dies shows `unknown` (with what it was and
 * since when) on the others, read from the monitor's view of that node; never `running` there.
 */
import type { MonitorStatus } from '../actors/monitor/index.js';
import { Harness, harnessAvailable } from '../node/harness/index.js';
import { eventually } from './helpers/node.js';
import { runsWhen } from './helpers/requires.js';

const available = harnessAvailable();

interface Row {
  id: string;
  state: string;
  node: string | null;
  pid: number | null;
  since: string | null;
  lastState?: string;
  reason?: string;
}

runsWhen(available.ok ? undefined : available.why)('a system on a node that is down shows unknown (was running, since when, no pid) on the others; once the node is back it shows what became of it', async (t) => {
  t.timeout(240_000);
  const h = await Harness.start({ nodes: ['n1', 'n2', 'n3'] });
  t.teardown(() => h.teardown());
  const primary = await eventually(async () => (await (await h.client('n1')).ask<MonitorStatus>('monitor', { type: 'monitor.status' }, { timeoutMs: 2000 })).primary ?? undefined, 30_000, 'a primary');
  const victim = ['n1', 'n2', 'n3'].find((node) => node !== primary)!;
  const watcher = primary;
  const created = await h.cli(victim, ['system', 'create', 's1', '--driver', 'sim', '--node', victim]);
  t.is(created.code, 0, created.stderr);
  t.is((await h.cli(victim, ['system', 'start', 's1'])).code, 0);
  const rows = async (): Promise<Row[]> => {
    const listed = await h.cli(watcher, ['--json', 'system', 'ls']);
    return listed.code === 0 ? (JSON.parse(listed.stdout) as Row[]) : [];
  };
  const running = await eventually(async () => (await rows()).find((row) => row.id === 's1' && row.state === 'running'), 30_000, `s1 running on ${victim}, seen from ${watcher}`);
  await h.kill(victim);
  const unknown = await eventually(async () => (await rows()).find((row) => row.id === 's1' && row.state === 'unknown'), 30_000, `s1 unknown once ${victim} is down`);
  t.like(unknown, { node: victim, lastState: 'running', pid: null, since: running.since });
  t.regex(unknown.reason ?? '', new RegExp(`node ${victim} is down; last known running since`));
  const table = await h.cli(watcher, ['system', 'ls']);
  t.regex(table.stdout, /s1\s+sim\s+unknown \(was running\)/);
  // Back: the sim guest did not outlive its daemon, and the node says so.
  await h.restart(victim);
  const after = await eventually(async () => (await rows()).find((row) => row.id === 's1' && row.state === 'stopped'), 60_000, `s1 stopped once ${victim} is back`);
  t.regex(after.reason ?? '', /simulated guest does not outlive/);
});
