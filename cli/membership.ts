import type { Argv } from 'yargs';
import type { AcpClient } from '../runtime/client.js';
import type { Message } from '../runtime/messages.js';
import type { MonitorStatus } from '../actors/monitor/index.js';
import { printJson } from './output.js';
import { AcpError } from '../runtime/errors.js';
import { assertName } from '../runtime/path.js';
import { SHUTDOWN_POLICIES } from '../actors/ha/protocol.js';
import { SHUTDOWN_POLICY_MEANING } from '../actors/model.js';
import { moveNonHaAway } from './maintenance.js';

interface Global {
  home: string;
  json: boolean;
}

type Run = (argv: Global, body: () => Promise<number | void>) => Promise<void>;
type WithClient = <T>(home: string, work: (client: AcpClient) => Promise<T>) => Promise<T>;

/** `acp node rm NAME`: take a node out of the cluster (admin). */
/** Read the node object, change some fields, compare-and-set: another writer's fields (votes, witness) stay. */
async function patchNode(client: AcpClient, name: string, patch: Record<string, unknown>): Promise<string> {
  for (let attempt = 0; ; attempt += 1) {
    const current = await client.ask<Message & { record: { value: Record<string, unknown>; version: string } }>('cdb', { type: 'cdb.get', key: `object/node/${name}` }).catch((error: unknown) => {
      if (error instanceof AcpError && error.code === 'ACP_ERR_CDB_NOT_FOUND') throw new AcpError('ACP_ERR_CDB_NOT_FOUND', `no node '${name}' in the cluster (acp nodes lists them)`);
      throw error;
    });
    try {
      const reply = await client.ask<Message & { version: string }>('cdb', { type: 'cdb.cas', key: `object/node/${name}`, value: { ...current.record.value, ...patch }, expect: current.record.version });
      return reply.version;
    } catch (error) {
      if (!(error instanceof AcpError && error.code === 'ACP_ERR_CDB_CONFLICT') || attempt >= 4) throw error;
    }
  }
}

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
    .command(
      'set <name>',
      "change a node's settings: --management on|off (whether it serves the web UI and REST), --shutdown-policy (what its clean shutdown does with HA systems) (operator)",
      (c) =>
        c
          .positional('name', { type: 'string', demandOption: true })
          .option('management', { type: 'string', describe: 'on: the node serves the web UI; off: it serves no web port' })
          .option('shutdown-policy', { type: 'string', describe: `what acp down on the node does with its HA systems: ${SHUTDOWN_POLICIES.join(', ')} (default conditional)` }),
      (argv) =>
        run(argv, () =>
          withClient(argv.home, async (client) => {
            const name = assertName(argv.name, 'node');
            const policyGiven = argv['shutdown-policy'];
            if (argv.management === undefined && policyGiven === undefined) throw new AcpError('ACP_ERR_CLI_USAGE', `say what to set: acp node set NAME --management on|off, or --shutdown-policy ${SHUTDOWN_POLICIES.join('|')}`);
            if (argv.management !== undefined && argv.management !== 'on' && argv.management !== 'off') throw new AcpError('ACP_ERR_CLI_USAGE', `--management is on or off, not '${argv.management}'`);
            const shutdownPolicy = SHUTDOWN_POLICIES.find((policy) => policy === policyGiven);
            if (policyGiven !== undefined && shutdownPolicy === undefined) throw new AcpError('ACP_ERR_CLI_USAGE', `--shutdown-policy is one of ${SHUTDOWN_POLICIES.join(', ')}, not '${String(policyGiven)}'`);
            const management = argv.management === undefined ? undefined : argv.management === 'on';
            const version = await patchNode(client, name, { ...(management === undefined ? {} : { management }), ...(shutdownPolicy === undefined ? {} : { shutdownPolicy }) });
            if (argv.json) printJson({ node: name, ...(management === undefined ? {} : { management }), ...(shutdownPolicy === undefined ? {} : { shutdownPolicy }), version });
            else {
              if (management !== undefined) process.stdout.write(`node ${name}: management ${management ? 'on (it serves the web UI)' : 'off (it serves no web port)'}\n`);
              if (shutdownPolicy !== undefined) process.stdout.write(`node ${name}: shutdown policy ${shutdownPolicy}: ${SHUTDOWN_POLICY_MEANING[shutdownPolicy]}\n`);
            }
          }),
        ),
    )
    .command(
      'maintenance <state> <name>',
      'maintenance on: the HA manager places nothing on the node and live-migrates its HA systems away, and its other running systems are live-migrated where a node can take them; off: HA systems move back (operator)',
      (c) => c.positional('state', { type: 'string', demandOption: true, describe: 'on or off' }).positional('name', { type: 'string', demandOption: true }),
      (argv) =>
        run(argv, () =>
          withClient(argv.home, async (client) => {
            if (argv.state !== 'on' && argv.state !== 'off') throw new AcpError('ACP_ERR_CLI_USAGE', `acp node maintenance takes on or off, not '${argv.state}'`);
            const name = assertName(argv.name, 'node');
            const maintenance = argv.state === 'on';
            // Kept in the node object: it survives a restart of the node.
            const version = await patchNode(client, name, { maintenance });
            if (!argv.json) process.stdout.write(maintenance ? `node ${name}: maintenance on; its HA systems migrate away (acp ha status)\n` : `node ${name}: maintenance off; HA systems that left for it move back\n`);
            // The HA manager moves HA systems; the others are migrated from here, where a node can take them.
            const moves = maintenance ? await moveNonHaAway(client, name, (line) => argv.json || process.stdout.write(`${line}\n`)) : undefined;
            if (argv.json) printJson({ node: name, maintenance, version, ...(moves ? { moved: moves.moved, stayed: moves.failed } : {}) });
            else for (const stayed of moves?.failed ?? []) process.stdout.write(`${stayed.id} stays on ${name}: ${stayed.error}\n`);
          }),
        ),
    )
    .demandCommand(1, 'name a node command: rm, set, maintenance');
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
