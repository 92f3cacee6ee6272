/**
 * HA's scenarios, in the manner of pve-ha-manager's and of test/monitor-scenarios.test.ts: each
 * directory under test/scenarios/ha/ holds the cluster with its HA systems (`cluster.json`), the
 * commands per round (`cmdlist.json`), the golden log of every transition (`log.expect`, compared
 * exactly) and where every system must run at the end (`expect.json`: system -> node, or null for
 * nowhere). The simulator checks the invariants after every step. `ACP_UPDATE_GOLDEN=1` rewrites
 * the logs (read the diff before committing it).
 */
import test from 'ava';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { HaSim, type HaClusterSpec } from '../node/sim/ha.js';

const root = fileURLToPath(new URL('../../test/scenarios/ha/', import.meta.url));
const update = process.env.ACP_UPDATE_GOLDEN === '1';

interface Expectations {
  /** Where each system runs at the end: a node, or null for nowhere. */
  running?: Record<string, string | null>;
  /** The HA state each system ends in. */
  states?: Record<string, string>;
}

const scenarios = readdirSync(root, { withFileTypes: true }).filter((entry) => entry.isDirectory()).map((entry) => entry.name).sort();

test('there are at least 25 HA scenarios', (t) => {
  t.true(scenarios.length >= 25, `only ${scenarios.length}`);
});

for (const name of scenarios) {
  test(`scenario ${name}`, (t) => {
    const dir = `${root}${name}/`;
    const spec = JSON.parse(readFileSync(`${dir}cluster.json`, 'utf8')) as HaClusterSpec;
    const rounds = JSON.parse(readFileSync(`${dir}cmdlist.json`, 'utf8')) as string[][];
    const sim = new HaSim(spec);
    sim.runRounds(rounds);
    const actual = `${sim.log.join('\n')}\n`;
    const golden = `${dir}log.expect`;
    if (update || !existsSync(golden)) writeFileSync(golden, actual);
    t.is(actual, readFileSync(golden, 'utf8'), `${name}: the log differs from log.expect`);
    const expected = JSON.parse(readFileSync(`${dir}expect.json`, 'utf8')) as Expectations;
    t.truthy(expected.running ?? expected.states, `${name}: expect.json says nothing`);
    for (const [system, node] of Object.entries(expected.running ?? {})) t.deepEqual(sim.where(system), node === null ? [] : [node], `${name}: where ${system} runs`);
    for (const [system, state] of Object.entries(expected.states ?? {})) t.is(sim.persisted[system]?.state as string | undefined, state, `${name}: the state of ${system}`);
  });
}
