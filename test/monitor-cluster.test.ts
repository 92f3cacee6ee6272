/**
 * The monitors' election between real daemons, each in its own network namespace: all nodes name
 * one primary, `@primary` asks land on it from every node, kill -9 of the primary gives a new one
 * (the time is reported) and a node-down alarm that clears when the node is back.
 */
import test from 'ava';
import type { MonitorStatus } from '../actors/monitor/index.js';
import type { Message } from '../runtime/messages.js';
import { Harness, harnessAvailable } from './harness/index.js';
import { eventually } from './helpers/node.js';
import { runsWhen } from './helpers/requires.js';

const available = harnessAvailable();
const NODES = ['n1', 'n2', 'n3'] as const;
let h: Harness | undefined;

const cluster = (): Harness => {
  if (!h) throw new Error('the harness did not start');
  return h;
};

async function statusOf(node: string): Promise<MonitorStatus> {
  return (await cluster().client(node)).ask<MonitorStatus>('monitor', { type: 'monitor.status' }, { timeoutMs: 2000 });
}

/** The primary every node in `nodes` names, once they all name the same one (not `not`). */
async function agreed(nodes: readonly string[], not?: string): Promise<string | undefined> {
  const views = await Promise.all(nodes.map(async (node) => (await statusOf(node)).primary));
  const first = views[0];
  return first !== null && first !== undefined && first !== not && views.every((view) => view === first) ? first : undefined;
}

if (!available.ok) {
  runsWhen(available.why)(`monitor election between real daemons (network namespaces): skipped, ${available.why}`, () => undefined);
} else {
  test.before(async () => {
    h = await Harness.start({ nodes: NODES });
    await h.waitSynced(60_000);
  });
  test.after.always(async () => {
    await h?.teardown();
  });

  test.serial('3 nodes name one primary, and @primary asks from every node are answered by it; kill -9 of it gives a new one within 3 s and a node-down alarm, cleared when it is back', async (t) => {
    t.timeout(120_000);
    const primary = await eventually(() => agreed(NODES), 20_000, 'all three nodes to name one primary');
    for (const node of NODES) {
      const pong = await (await cluster().client(node)).ask<Message & { path: string }>('acp://lab/@primary/monitor', { type: 'ping' });
      t.is(pong.path, `acp://lab/${primary}/monitor`, `asked from ${node}`);
      const cli = await cluster().cli(node, ['cluster', 'status']);
      t.is(cli.code, 0, cli.stderr);
      t.regex(cli.stdout, new RegExp(`^primary   ${primary} \\(term \\d+`));
    }

    const others = NODES.filter((node) => node !== primary);
    const killedAt = Date.now();
    await cluster().kill(primary);
    const successor = await eventually(() => agreed(others, primary), 10_000, 'the other two to agree on a new primary');
    const failoverMs = Date.now() - killedAt;
    t.log(`kill -9 of ${primary}: ${others.join(' and ')} agree on ${successor} after ${failoverMs} ms`);
    t.true(failoverMs < 3000, `a new primary after ${failoverMs} ms`);
    const alarmId = `node-down.${primary}`;
    await eventually(async () => ((await statusOf(successor)).openAlarms.some((alarm) => alarm.id === alarmId) ? true : undefined), 5000, `${alarmId} to be raised`);
    t.log(`${alarmId} raised after ${Date.now() - killedAt} ms`);
    const alarm = await (await cluster().client(others.find((node) => node !== successor)!)).ask<Message & { record: { value: { open: boolean; by: string; term: number } } }>('cdb', { type: 'cdb.get', key: `object/alarm/${alarmId}` });
    t.true(alarm.record.value.open);
    t.is(alarm.record.value.by, successor);
    const pong = await (await cluster().client(others[0]!)).ask<Message & { path: string }>('acp://lab/@primary/monitor', { type: 'ping' });
    t.is(pong.path, `acp://lab/${successor}/monitor`);

    await cluster().restart(primary);
    await eventually(() => agreed(NODES), 30_000, `${primary} to come back and follow ${successor}`);
    t.is(await agreed(NODES), successor);
    await eventually(async () => ((await statusOf(successor)).openAlarms.some((open) => open.id === alarmId) ? undefined : true), 10_000, `${alarmId} to clear`);
  });
}
