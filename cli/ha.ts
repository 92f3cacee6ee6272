/** `acp ha status`: the HA manager's view (asked of the primary), each system's state, node and term, each node's state. */
import type { Argv } from 'yargs';
import type { HaView } from '../actors/ha/view.js';
import type { AcpClient } from '../runtime/client.js';
import { AcpError } from '../runtime/errors.js';
import { printJson, table } from './output.js';

interface Global {
  home: string;
  json: boolean;
}

type Run = (argv: Global, body: () => Promise<number | void>) => Promise<void>;
type WithClient = <T>(home: string, work: (client: AcpClient) => Promise<T>) => Promise<T>;

async function haStatus(client: AcpClient, json: boolean): Promise<void> {
  const view = await client.ask<HaView>(`acp://${client.node.cluster}/@primary/ha`, { type: 'ha.show' }, { timeoutMs: 5000 });
  if (view.manager === null) throw new AcpError('ACP_ERR_HA_NOT_MANAGER', `the primary (${view.node}) runs no HA manager yet (it took over moments ago); try again in a second`);
  if (json) {
    printJson({ primary: view.node, term: view.manager.term, systems: view.manager.systems, nodes: view.manager.nodes });
    return;
  }
  const { manager } = view;
  process.stdout.write(`HA manager on ${view.node}, term ${manager.term}\n`);
  if (manager.systems.length === 0) process.stdout.write('no HA systems (acp system create ID --ha)\n');
  else {
    const rows = manager.systems.map((system) => [system.id, system.state, system.node ?? '-', system.target ?? '-', String(system.relocates), String(manager.term)]);
    process.stdout.write(`${table([['SYSTEM', 'STATE', 'NODE', 'TARGET', 'RELOCATED', 'TERM'], ...rows])}\n`);
  }
  const nodes = manager.nodes.map((node) => [node.name, node.state, `${(node.lastReportAgoMs / 1000).toFixed(1)} s ago`, node.fenceInMs === null ? '-' : `recovered in ${(node.fenceInMs / 1000).toFixed(1)} s`, node.running.join(',') || '-']);
  process.stdout.write(`\n${table([['NODE', 'STATE', 'LAST REPORT', 'FENCE', 'RUNNING'], ...nodes])}\n`);
}

/** `acp ha status [--json]`. */
export function haCommands(y: Argv<Global>, run: Run, withClient: WithClient): Argv<Global> {
  return y
    .command('status', "the HA manager's view: each HA system's state, node and term, each node's state", (c) => c, (argv) => run(argv, () => withClient(argv.home, (client) => haStatus(client, argv.json))))
    .demandCommand(1, 'name an ha command: status');
}
