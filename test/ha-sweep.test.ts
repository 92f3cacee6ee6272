/**
 * A seeded sweep of random fault schedules over the HA managers and the election together
 * (node/sim/ha.ts). The simulator checks after every step: no HA system ever runs on two
 * nodes, every grant (lease and orders) is sent by the lease-holding primary of the term it
 * carries, no node starts or migrates a system on an order older than the newest term its monitor
 * knows. After each schedule the faults heal, every node is back, and then one node loses power:
 * every HA system must be running on exactly one live node within the bound (10 s) of that.
 *
 * ACP_HA_SWEEP=N runs N schedules (default 1000); ACP_HA_SEED replays from another base seed; a
 * failure names the seed of its schedule.
 */
import test, { type ExecutionContext } from 'ava';
import { HaSim } from '../node/sim/ha.js';
import { randomHaSchedule } from '../node/sim/ha-schedules.js';

const schedules = Number(process.env.ACP_HA_SWEEP ?? 1000);
const baseSeed = Number(process.env.ACP_HA_SEED ?? 20261130);
const BOUND_MS = 10_000;

const CHUNK = 50;

for (let first = 0; first < schedules; first += CHUNK) {
  const last = Math.min(schedules, first + CHUNK);
  // One after the other, each after a turn of the event loop, so that ava hears each one finish (its timeout counts from the last).
  test.serial(`random fault schedules ${first}-${last - 1} of ${schedules} never run an HA system twice, and recover a dead node's systems within the bound`, async (t) => {
    await new Promise((resolve) => setImmediate(resolve));
    sweep(t, first, last);
  });
}

function sweep(t: ExecutionContext, from: number, to: number): void {
  let steps = 0;
  let grants = 0;
  let recoveries = 0;
  let worst = 0;
  for (let index = from; index < to; index += 1) {
    const seed = baseSeed + index;
    const { spec, rounds, victim } = randomHaSchedule(seed);
    const sim = new HaSim(spec);
    const describe = () => `schedule seed ${seed} (${rounds.map((round) => round.commands.join('; ')).join(' / ')}; then power ${victim} off)`;
    try {
      for (const round of rounds) {
        for (const command of round.commands) sim.command(command);
        sim.run(round.ms);
      }
      sim.command('heal');
      sim.command('power all on');
      for (const name of spec.nodes.map((node) => node.name)) {
        sim.command(`start ${name}`);
        sim.command(`maintenance ${name} off`);
      }
      sim.run(8000);
      const hadVictim = [...sim.specs.keys()].some((id) => sim.where(id).includes(victim));
      sim.command(`power ${victim} off`);
      const from = sim.now;
      let done = false;
      while (sim.now - from < BOUND_MS) {
        sim.run(100);
        const settled = [...sim.specs.keys()].every((id) => sim.persisted[id]?.state === 'error' || (sim.where(id).length === 1 && !sim.where(id).includes(victim)));
        if (settled) {
          done = true;
          if (hadVictim) {
            recoveries += 1;
            worst = Math.max(worst, sim.now - from);
          }
          break;
        }
      }
      if (!done) {
        const where = [...sim.specs.keys()].map((id) => `${id}@${sim.where(id).join(',') || '-'}(${sim.persisted[id]?.state ?? '?'})`).join(' ');
        t.fail(`${describe()}: not every HA system runs once on a live node ${BOUND_MS} ms after ${victim} lost power: ${where}\n${sim.log.slice(-60).join('\n')}`);
        return;
      }
    } catch (error) {
      t.fail(`${describe()}: ${(error as Error).message}`);
      return;
    }
    steps += sim.stepsChecked;
    grants += sim.grantsChecked;
  }
  const count = to - from;
  t.log(`base seed ${baseSeed}, schedules ${from}-${to - 1}: ${steps} steps and ${grants} grants checked, ${recoveries} recoveries from a dead node, slowest ${worst} ms`);
  t.true(steps > count * 100, `${steps} steps over ${count} schedules`);
  t.true(grants > count * 10, `${grants} grants over ${count} schedules`);
  t.true(recoveries > count / 10, `${recoveries} recoveries over ${count} schedules`);
}
