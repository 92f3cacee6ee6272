/**
 * A seeded sweep of random fault schedules over the HA managers and the election together
 * (test/helpers/ha-sim.ts). The simulator checks after every step: no HA system ever runs on two
 * nodes, every grant (lease and orders) is sent by the lease-holding primary of the term it
 * carries, no node starts or migrates a system on an order older than the newest term its monitor
 * knows. After each schedule the faults heal, every node is back, and then one node loses power:
 * every HA system must be running on exactly one live node within the bound (10 s) of that.
 *
 * ACP_HA_SWEEP=N runs N schedules (default 1000); ACP_HA_SEED replays from another base seed; a
 * failure names the seed of its schedule.
 */
import test from 'ava';
import { seeded } from './helpers/monitor-sim.js';
import { HaSim, type HaClusterSpec } from './helpers/ha-sim.js';

const schedules = Number(process.env.ACP_HA_SWEEP ?? 1000);
const baseSeed = Number(process.env.ACP_HA_SEED ?? 20261130);
const BOUND_MS = 10_000;

const clusters: HaClusterSpec['nodes'][] = [
  [{ name: 'n1' }, { name: 'n2' }, { name: 'n3' }],
  [{ name: 'n1' }, { name: 'n2' }, { name: 'n3' }, { name: 'n4' }, { name: 'n5' }],
  [{ name: 'n1' }, { name: 'n2' }, { name: 'n3' }, { name: 'n4' }],
];

export function randomSchedule(seed: number): { spec: HaClusterSpec; rounds: { commands: string[]; ms: number }[]; victim: string } {
  const rand = seeded(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(rand() * items.length)]!;
  const nodes = pick(clusters);
  const names = nodes.map((node) => node.name);
  const systems: HaClusterSpec['systems'] = [];
  const count = 1 + Math.floor(rand() * 4);
  for (let index = 0; index < count; index += 1) {
    const id = `s${index + 1}`;
    const prefer = rand() < 0.4 ? { [pick(names)]: 2, [pick(names)]: 1 } : undefined;
    systems.push({ id, ...(rand() < 0.5 ? { node: pick(names) } : {}), ...(prefer ? { prefer } : {}), ...(index === 1 && rand() < 0.5 ? { antiAffinity: ['s1'] } : {}) });
  }
  const fault = (): string => {
    const node = pick(names);
    switch (Math.floor(rand() * 14)) {
      case 0:
        return `power ${node} off`;
      case 1:
        return `power ${node} on`;
      case 2:
        return `kill ${node}${rand() < 0.5 ? ' guard' : ''}`;
      case 3:
        return `network ${node} ${rand() < 0.5 ? 'off' : 'on'}`;
      case 4:
        return `stall ${node} ${100 + Math.floor(rand() * 6000)}`;
      case 5: {
        const groups: string[][] = [[], []];
        for (const name of names) groups[rand() < 0.5 ? 0 : 1]!.push(name);
        if (rand() < 0.5) for (const group of groups) if (!group.includes(node)) group.push(node);
        return `partition ${groups.filter((group) => group.length > 0).map((group) => group.join(',')).join('|')}`;
      }
      case 6:
        return `drop ${(rand() * 0.5).toFixed(2)}`;
      case 7:
        return `dup ${(rand() * 0.5).toFixed(2)}`;
      case 8:
        return `delay ${Math.floor(rand() * 20)} ${20 + Math.floor(rand() * 300)}`;
      case 9:
        return `crash ${pick(systems).id}`;
      case 10:
        return `maintenance ${node} ${rand() < 0.5 ? 'on' : 'off'}`;
      case 11:
        return `restart ${node}`;
      default:
        return 'heal';
    }
  };
  const rounds = [{ commands: ['power all on'], ms: 2000 + Math.floor(rand() * 3000) }];
  for (let round = 0; round < 6; round += 1) {
    const faults = Math.floor(rand() * 3);
    rounds.push({ commands: Array.from({ length: faults }, fault), ms: 100 + Math.floor(rand() * 4000) });
  }
  return { spec: { nodes, systems, seed }, rounds, victim: pick(names) };
}

test(`${schedules} random fault schedules never run an HA system twice, and recover a dead node's systems within the bound`, (t) => {
  let steps = 0;
  let grants = 0;
  let recoveries = 0;
  let worst = 0;
  for (let index = 0; index < schedules; index += 1) {
    const seed = baseSeed + index;
    const { spec, rounds, victim } = randomSchedule(seed);
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
  t.log(`base seed ${baseSeed}: ${schedules} schedules, ${steps} steps and ${grants} grants checked, ${recoveries} recoveries from a dead node, slowest ${worst} ms`);
  t.true(steps > schedules * 100, `${steps} steps over ${schedules} schedules`);
  t.true(grants > schedules * 10, `${grants} grants over ${schedules} schedules`);
  t.true(recoveries > schedules / 10, `${recoveries} recoveries over ${schedules} schedules`);
});
