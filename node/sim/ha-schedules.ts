/** Random fault schedules for the HA sweep (test/ha-sweep.test.ts), by seed. */
import { seeded } from './monitor.js';
import type { HaClusterSpec } from './ha.js';

const clusters: HaClusterSpec['nodes'][] = [
  [{ name: 'n1' }, { name: 'n2' }, { name: 'n3' }],
  [{ name: 'n1' }, { name: 'n2' }, { name: 'n3' }, { name: 'n4' }, { name: 'n5' }],
  [{ name: 'n1' }, { name: 'n2' }, { name: 'n3' }, { name: 'n4' }],
];

/** One random schedule: a cluster with one to four HA systems, rounds of zero to two faults each, and the node to power off at the end. */
export function randomHaSchedule(seed: number): { spec: HaClusterSpec; rounds: { commands: string[]; ms: number }[]; victim: string } {
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

