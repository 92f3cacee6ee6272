/**
 * The monitors' scenarios, in the manner of pve-ha-manager's: each directory under
 * test/scenarios/monitor/ holds the cluster (`cluster.json`), the commands per round
 * (`cmdlist.json`), the golden log of every transition (`log.expect`, compared exactly) and what
 * must hold at the end (`expect.json`: the primary every live node names, the open alarms).
 * The simulator checks the invariants after every step. `ACP_UPDATE_GOLDEN=1` rewrites the logs
 * (read the diff before committing it).
 */
import test from 'ava';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MonitorSim, type ClusterSpec } from '../node/sim/monitor.js';

const root = fileURLToPath(new URL('../../test/scenarios/monitor/', import.meta.url));
const update = process.env.ACP_UPDATE_GOLDEN === '1';

interface Expectations {
  /** The primary every powered node names at the end; null: none anywhere. */
  primary?: string | null;
  /** Ids of the alarms open at the end, sorted. */
  openAlarms?: string[];
}

const scenarios = readdirSync(root, { withFileTypes: true }).filter((entry) => entry.isDirectory()).map((entry) => entry.name).sort();

test('there are at least 20 monitor scenarios', (t) => {
  t.true(scenarios.length >= 20, `only ${scenarios.length}`);
});

for (const name of scenarios) {
  test(`scenario ${name}`, (t) => {
    const dir = `${root}${name}/`;
    const spec = JSON.parse(readFileSync(`${dir}cluster.json`, 'utf8')) as ClusterSpec;
    const rounds = JSON.parse(readFileSync(`${dir}cmdlist.json`, 'utf8')) as string[][];
    const sim = new MonitorSim(spec);
    sim.runRounds(rounds);
    const actual = `${sim.log.join('\n')}\n`;
    const golden = `${dir}log.expect`;
    if (update || !existsSync(golden)) writeFileSync(golden, actual);
    t.is(actual, readFileSync(golden, 'utf8'), `${name}: the log differs from log.expect`);
    if (existsSync(`${dir}expect.json`)) {
      const expected = JSON.parse(readFileSync(`${dir}expect.json`, 'utf8')) as Expectations;
      if (expected.primary !== undefined) {
        for (const [node, primary] of sim.views()) t.is(primary, expected.primary, `${name}: ${node} names ${primary ?? 'no primary'}`);
      }
      if (expected.openAlarms !== undefined) {
        const open = [...sim.alarms.values()].filter((alarm) => alarm.open).map((alarm) => alarm.id).sort();
        t.deepEqual(open, expected.openAlarms, `${name}: open alarms`);
      }
    }
  });
}
