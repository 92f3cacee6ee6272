import type { Argv } from 'yargs';
import type { AcpClient } from '../runtime/client.js';
import type { Message } from '../runtime/messages.js';
import type { MonitorStatus } from '../actors/monitor/index.js';
import { printJson } from './output.js';

interface Global {
  home: string;
  json: boolean;
}

type Run = (argv: Global, body: () => Promise<number | void>) => Promise<void>;
type WithClient = <T>(home: string, work: (client: AcpClient) => Promise<T>) => Promise<T>;

/** `acp node rm NAME`: take a node out of the cluster (admin). */
export function nodeCommands(y: Argv<Global>, run: Run, withClient: WithClient): Argv<Global> {
  return y
    .command(
      'rm <name>',
      'remove a node from the cluster: its certificate is refused by every node, its records removed (admin)',
      (c) => c.positional('name', { type: 'string', demandOption: true }),
      (argv) =>
        run(argv, () =>
          withClient(argv.home, async (client) => {
            const reply = await client.ask<Message & { node: string; revokedAt: string; hint: string }>('agent', { type: 'agent.remove-node', node: argv.name });
            if (argv.json) printJson(reply);
            else process.stdout.write(`node ${reply.node} removed at ${reply.revokedAt}\nnext: ${reply.hint}\n`);
          }),
        ),
    )
    .demandCommand(1, 'name a node command: rm');
}

/** `acp cluster rotate-keys`: new cluster and API keys on every live node, without a restart (admin). */
export function clusterCommands(y: Argv<Global>, run: Run, withClient: WithClient): Argv<Global> {
  return y
    .command(
      'rotate-keys',
      'replace the cluster key and the shared API key on every live node, without a restart (admin)',
      (c) => c,
      (argv) =>
        run(argv, () =>
          withClient(argv.home, async (client) => {
            const reply = await client.ask<Message & { installed: string[]; failed: { node: string; reason: string }[] }>('agent', { type: 'agent.rotate-keys' }, { timeoutMs: 60_000 });
            if (argv.json) {
              printJson(reply);
              return reply.failed.length > 0 ? 1 : 0;
            }
            process.stdout.write(`new keys on ${reply.installed.join(', ')}\n`);
            for (const failure of reply.failed) process.stdout.write(`not on ${failure.node}: ${failure.reason} (it must join again, or get the keys copied)\n`);
            return reply.failed.length > 0 ? 1 : 0;
          }),
        ),
    )
    .command(
      'status',
      'the primary, its term and lease, the voters present and needed, the witnesses and the open alarms, as this node sees them',
      (c) => c,
      (argv) =>
        run(argv, () =>
          withClient(argv.home, async (client) => {
            const status = await client.ask<MonitorStatus>('monitor', { type: 'monitor.status' });
            if (argv.json) {
              printJson(status);
              return;
            }
            process.stdout.write(formatClusterStatus(status));
          }),
        ),
    )
    .demandCommand(1, 'name a cluster command: status, rotate-keys');
}

export function formatClusterStatus(status: MonitorStatus): string {
  const lease = status.leaseRemainingMs === null ? '' : `, lease ${status.leaseRemainingMs} ms left`;
  const present = status.voters.present === null ? '' : `${status.voters.present} of `;
  const lines = [
    `primary   ${status.primary ?? 'none (no quorum, or an election under way)'} (term ${status.term}${lease}; this node ${status.node} is ${status.role})`,
    `voters    ${present}${status.voters.total}, ${status.voters.needed} needed; witness: ${status.witnesses.length > 0 ? status.witnesses.join(', ') : '-'}`,
    `members   ${status.members.map((member) => `${member.name}${member.votes === 0 ? ' (no vote)' : ''}${member.state === null ? '' : ` ${member.state}`}`).join(', ')}`,
    `alarms    ${status.openAlarms.length === 0 ? 'none open' : status.openAlarms.map((alarm) => `${alarm.id} ${alarm.severity} (term ${alarm.term}, by ${alarm.by})`).join('; ')}`,
  ];
  return `${lines.join('\n')}\n`;
}
