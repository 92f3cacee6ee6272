#!/usr/bin/env node
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { connect, type AcpClient } from '../node/client.js';
import { readConfig, secretExists } from '../adapters/home.js';
import { homePaths } from '../runtime/config.js';
import { AcpError } from '../runtime/errors.js';
import { LOG_LEVELS, type LogLevel } from '../runtime/logger.js';
import type { Message } from '../runtime/messages.js';
import type { NodeStatus } from '../runtime/services.js';
import { cdbCommands, printNodes, printServices } from './cdb.js';
import { systemCommands } from './system.js';
import { networkCommands } from './network.js';
import { storageCommands } from './storage.js';
import { apiTokenCommands, speakingToken } from './tokens.js';
import { clusterCommands, nodeCommands } from './membership.js';
import { LOGS_DESCRIPTION, logsOptions, showLogs } from './logs.js';
import { alarmCommands, health } from './monitor.js';
import { parseDuration } from './duration.js';
import { forwardedUpFlags, upFlags, upOptions, type UpArgv } from './up.js';
import { haCommands } from './ha.js';
import { formatGuestsAtDown, formatUpSummary, guestsBeforeDown, runForeground, startDetached, stopDaemon } from './control.js';
import { flagOnce, onlyOnce, refuseRepeatedFlags, refuseSwitchValues, wholeNumber } from './flags.js';
import { EXIT_OK, EXIT_USAGE, formatStatus, printError, printJson, table, usageMessage, type SyncSummary } from './output.js';

// A reader that goes away (`acp cdb watch meta/ | head`) ends this command quietly, as for any
// Unix tool, instead of an unhandled EPIPE with a stack trace.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(EXIT_OK);
  throw error;
});

interface Global {
  home: string;
  json: boolean;
  'log-level'?: LogLevel;
}

function defaultHome(): string {
  return process.env.ACP_HOME && process.env.ACP_HOME.length > 0 ? process.env.ACP_HOME : join(homedir(), '.acp');
}

/** `--home DIR`: once, and not empty (an empty one would be the current directory). */
function homeOption(given: unknown): string {
  const value = onlyOnce('home', given);
  if (typeof value !== 'string' || value.trim() === '') throw new AcpError('ACP_ERR_CLI_USAGE', '--home needs a directory (or leave it out for $ACP_HOME, else ~/.acp)');
  return resolve(value);
}

function parseMessage(text: string): Message {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new AcpError('ACP_ERR_CLI_BAD_JSON', `the message is not valid JSON (${(error as Error).message}): ${text}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value) || typeof (value as { type?: unknown }).type !== 'string') {
    throw new AcpError('ACP_ERR_CLI_BAD_JSON', `the message must be a JSON object with a string "type", like '{"type":"ping"}'`);
  }
  return value as Message;
}

/** The API token this invocation speaks with (--token or $ACP_TOKEN); absent: the home's API key. */
let apiToken: string | undefined;

async function withClient<T>(home: string, work: (client: AcpClient) => Promise<T>): Promise<T> {
  const client = await connect(apiToken === undefined ? { home } : { home, token: apiToken });
  try {
    return await work(client);
  } finally {
    await client.close().catch(() => undefined);
  }
}

/** Runs a command body; maps its outcome to the exit code and prints errors as one line. */
function run(argv: Global, body: () => Promise<number | void>): Promise<void> {
  return body().then(
    (code) => {
      process.exitCode = code ?? EXIT_OK;
    },
    (error: unknown) => {
      process.exitCode = printError(error, argv.json);
    },
  );
}

function printReply(argv: Global, reply: unknown): void {
  if (argv.json) printJson(reply);
  else process.stdout.write(`${JSON.stringify(reply, null, 2)}\n`);
}

/** `acp up` (and `acp witness up` after its join): starts the daemon from the home's config and this run's flags. */
function startNode(argv: UpArgv): Promise<void> {
  return run(argv, async () => {
    const options = upOptions(argv);
    if (argv.detach) {
      const status = await startDetached(options, forwardedUpFlags(argv));
      const web = await withClient(argv.home, (client) => client.ask<Message & { url: string }>('webapi', { type: 'webapi.address' })).then((reply) => reply.url, () => null);
      if (argv.json) printJson({ pid: status.pid, socket: status.socket, web, cluster: status.cluster, node: status.node, incarnation: status.incarnation });
      else process.stdout.write(`acpd running (pid ${status.pid}, node ${status.cluster}/${status.node})\n${status.socket}\n${web ? `web ${web}\n` : ''}`);
      return EXIT_OK;
    }
    return runForeground(options, (summary) => {
      if (!argv['log-file']) process.stdout.write(formatUpSummary(summary));
    });
  });
}

const cli = yargs(hideBin(process.argv))
  .scriptName('acp')
  .usage('$0 <command> [options]')
  .option('home', { type: 'string', default: defaultHome(), defaultDescription: '$ACP_HOME or ~/.acp', describe: 'home directory of the node', coerce: homeOption })
  .option('json', { type: 'boolean', default: false, describe: 'machine-readable output' })
  .option('log-level', { choices: LOG_LEVELS, describe: "daemon log level (default: the config's, 'info')" })
  .option('token', { type: 'string', describe: 'an API token to speak with instead of the home\'s API key (default: $ACP_TOKEN); for acp join, the join token' })
  // A check, not a middleware: its refusal goes through .fail() like any usage error.
  .check((argv) => {
    refuseRepeatedFlags(argv);
    refuseSwitchValues(argv);
    apiToken = speakingToken(argv.token, process.env.ACP_TOKEN);
    return true;
  }, true)
  .command(
    'up',
    'start the node (in the foreground unless --detach)',
    upFlags,
    (argv) => startNode(argv),
  )
  .command(
    'down',
    'stop the node and wait until its process is gone; its QEMU guests keep running (adopted when it starts again) unless --stop-systems',
    (y) =>
      y
        .option('stop-systems', { type: 'boolean', default: false, describe: "stop this node's systems first (each as acp system stop); HA systems go by the node's shutdown policy instead (acp node set NAME --shutdown-policy)" })
        // Checked as it is read, before anything stops: a bad --timeout must not take the node down.
        .option('timeout', { type: 'number', default: 30_000, coerce: flagOnce('timeout', wholeNumber({ min: 0, max: 600_000, unit: 'milliseconds', note: 'nothing was stopped' })), describe: 'with --stop-systems: ms each guest has to power off' }),
    (argv) =>
      run(argv, async () => {
        const guests = await guestsBeforeDown(argv.home, argv['stop-systems'], argv.timeout, apiToken);
        if (!argv.json && guests !== undefined && guests.ha.length > 0 && guests.shutdownPolicy !== 'conditional') {
          process.stdout.write(`draining ${guests.ha.length} HA system${guests.ha.length === 1 ? '' : 's'} first (shutdown policy ${guests.shutdownPolicy}; up to 2 min)\n`);
        }
        const result = await stopDaemon(argv.home);
        if (argv.json) printJson({ stopped: result.wasRunning, pid: result.pid ?? null, ...(guests ? { guests } : {}) });
        else process.stdout.write(`${result.wasRunning ? `acpd (pid ${result.pid}) stopped` : `acpd is not running on ${argv.home}`}\n${guests ? formatGuestsAtDown(guests, argv['stop-systems']) : ''}`);
      }),
  )
  .command('status', "show the node's identity and every service's state", (y) => y, (argv) =>
    run(argv, () =>
      withClient(argv.home, async (client) => {
        const status = await client.ask<NodeStatus>('framework', { type: 'status' });
        // A node in no cluster, or whose CDB is not running, has no sync to report.
        const sync = await client.ask<Message & SyncSummary>('cdb', { type: 'cdb.sync.status' }).catch(() => null);
        if (argv.json) printJson({ ...status, sync });
        else process.stdout.write(`${formatStatus(status, sync)}\n`);
      }),
    ),
  )
  .command(
    'ask <path> <message>',
    "ask an actor and print its reply (path: acp://cluster/node/service[/child...] or 'service[/child...]' on this node)",
    (y) => y.positional('path', { type: 'string', demandOption: true }).positional('message', { type: 'string', demandOption: true }).option('timeout', { type: 'number', default: 5000, coerce: flagOnce('timeout', wholeNumber({ min: 1, max: 3_600_000, unit: 'milliseconds' })), describe: 'milliseconds to wait for the reply' }),
    (argv) =>
      run(argv, async () => {
        const message = parseMessage(argv.message);
        await withClient(argv.home, async (client) => {
          const target = client.resolve(argv.path);
          printReply(argv, await client.ask(target, message, { timeoutMs: argv.timeout }));
        });
      }),
  )
  .command(
    'tell <path> <message>',
    'send a message without waiting for a reply (returns once the node accepted it)',
    (y) => y.positional('path', { type: 'string', demandOption: true }).positional('message', { type: 'string', demandOption: true }),
    (argv) =>
      run(argv, async () => {
        const message = parseMessage(argv.message);
        await withClient(argv.home, async (client) => {
          const target = client.resolve(argv.path);
          await client.tell(target, message);
          if (argv.json) printJson({ accepted: true });
        });
      }),
  )
  .command(
    'init',
    'make this home the first node of a new cluster: its CA, certificates, cluster key and API key',
    (y) =>
      y
        .option('cluster', { type: 'string', demandOption: true, describe: 'the cluster name' })
        .option('node', { type: 'string', describe: 'this node (default: the host name)' })
        .option('agent', { type: 'string', describe: 'where this node\'s agent listens, HOST:PORT' }),
    (argv) =>
      run(argv, async () => {
        const { initCluster } = await import('../node/cluster.js');
        const result = await initCluster(argv.home, { cluster: argv.cluster, ...(argv.node === undefined ? {} : { node: argv.node }), ...(argv.agent === undefined ? {} : { agent: argv.agent }) });
        if (argv.json) printJson(result);
        else process.stdout.write(`cluster ${result.cluster} created; this home is node ${result.node} and holds its CA (fingerprint ${result.caFingerprint})\nnext: acp up --detach${result.agent ? '' : ' --agent HOST:PORT'}, then acp token create for each node to join\n`);
      }),
  )
  .command('token', 'join tokens, and API tokens (acp token api ...)', (y) =>
    y
      .command('api', 'API tokens with a role (admin, operator, auditor)', (a) => apiTokenCommands(a, run, withClient))
      .command(
        'create',
        'print a one-time join token (on the node holding the CA)',
        (c) => c.option('ttl', { type: 'string', default: '1h', describe: 'how long the token is valid (e.g. 30m, 1h, 2d)' }),
        (argv) =>
          run(argv, () =>
            withClient(argv.home, async (client) => {
              const reply = await client.ask<Message & { token: string; expiresAt: string; agent: string | null }>('agent', { type: 'agent.token', ttlMs: parseDuration(argv.ttl) });
              if (argv.json) printJson(reply);
              else process.stdout.write(`${reply.token}\n(valid until ${reply.expiresAt}; on the new node: acp join ${reply.agent ?? 'HOST:PORT'} --token <token>)\n`);
            }),
          ),
      )
      .demandCommand(1, 'name a token command: create (a join token) or api'),
  )
  .command(
    'join <address>',
    'join a cluster through the agent at ADDRESS (HOST:PORT) with a token; then acp up',
    (y) =>
      y
        .positional('address', { type: 'string', demandOption: true })
        .option('token', { type: 'string', demandOption: true, describe: 'from acp token create' })
        .option('node', { type: 'string', describe: 'this node (default: the host name)' })
        .option('agent', { type: 'string', describe: 'where this node\'s agent will listen, HOST:PORT' })
        .option('witness', { type: 'boolean', default: false, describe: 'join as a witness: a vote-only member that runs only cdb, agent, api and monitor' }),
    (argv) =>
      run(argv, async () => {
        const { joinCluster } = await import('../node/cluster.js');
        const result = await joinCluster(argv.home, argv.address, argv.token, { ...(argv.node === undefined ? {} : { node: argv.node }), ...(argv.agent === undefined ? {} : { agent: argv.agent }), witness: argv.witness });
        if (argv.json) printJson(result);
        else process.stdout.write(`joined cluster ${result.cluster} as ${result.witness ? 'witness ' : ''}${result.node} (certificate until ${result.notAfter}); next: acp up --detach\n`);
      }),
  )
  .command('witness', "a vote-only member: a two-node cluster's third vote (acp witness up)", (y) =>
    y
      .command(
        'up [address]',
        'join the cluster at ADDRESS (HOST:PORT) as a witness with --token (first time only), then start it: cdb, agent, api and monitor, no other service',
        (c) => upFlags(c).positional('address', { type: 'string', describe: "a member's agent, HOST:PORT (first time only)" }).option('token', { type: 'string', alias: 'cluster-token', describe: 'the join token from acp token create (first time only)' }),
        (argv) =>
          run(argv, async () => {
            const config = readConfig(homePaths(argv.home));
            if (config?.witness !== true || !secretExists(homePaths(argv.home).nodeCert)) {
              if (secretExists(homePaths(argv.home).nodeCert)) throw new AcpError('ACP_ERR_CONFIG_MISMATCH', `${argv.home} is a full node of ${config?.cluster ?? 'a cluster'}, not a witness; use another --home for the witness`);
              if (argv.address === undefined || argv.token === undefined) throw new AcpError('ACP_ERR_CLI_USAGE', 'the first acp witness up needs the address of a member\'s agent and --token (from acp token create on the node holding the CA)');
              const { joinCluster } = await import('../node/cluster.js');
              const joined = await joinCluster(argv.home, argv.address, argv.token, { ...(argv.node === undefined ? {} : { node: argv.node }), ...(argv.agent === undefined ? {} : { agent: argv.agent }), witness: true });
              if (!argv.json) process.stdout.write(`joined cluster ${joined.cluster} as witness ${joined.node}\n`);
            }
            await startNode(argv);
            return process.exitCode === undefined ? EXIT_OK : Number(process.exitCode);
          }),
      )
      .demandCommand(1, 'name a witness command: up'),
  )
  .command('cert', 'this node\'s certificate', (y) =>
    y
      .command('renew', 'replace this node\'s key and certificate without downtime', (c) => c, (argv) =>
        run(argv, () =>
          withClient(argv.home, async (client) => {
            const reply = await client.ask<Message & { notAfter: string; fingerprint: string }>('agent', { type: 'agent.renew' }, { timeoutMs: 30_000 });
            if (argv.json) printJson(reply);
            else process.stdout.write(`certificate renewed: valid until ${reply.notAfter} (sha256 ${reply.fingerprint})\n`);
          }),
        ),
      )
      .demandCommand(1, 'name a cert command: renew'),
  )
  .command('peers', "this node's agent links to other nodes", (y) => y, (argv) =>
    run(argv, () =>
      withClient(argv.home, async (client) => {
        const reply = await client.ask<Message & { peers: { node: string; state: string; address: string | null; incarnation: number | null; queued: number }[] }>('agent', { type: 'agent.peers' });
        if (argv.json) printJson(reply.peers);
        else process.stdout.write(`${table([['NODE', 'LINK', 'ADDRESS', 'INCARNATION', 'QUEUED'], ...reply.peers.map((peer) => [peer.node, peer.state, peer.address ?? '-', String(peer.incarnation ?? '-'), String(peer.queued)])])}\n`);
      }),
    ),
  )
  .command('cdb', 'read, write and watch the cluster database', (y) => cdbCommands(y, run, withClient))
  .command('system', 'define and run systems (virtual machines)', (y) => systemCommands(y, run, withClient))
  .command('network', 'define networks (bridges, VLANs, trunks) that every node realizes', (y) => networkCommands(y, run, withClient))
  .command('storage', 'pools, shares, volumes and block devices (acp storage pool|share|volume|device ...)', (y) => storageCommands(y, run, withClient))
  .command('logs', LOGS_DESCRIPTION, (c) => logsOptions(c), (argv) => run(argv, () => showLogs(argv)))
  .command(
    'ui [action] [id]',
    'a one-time link (60 s) that logs a browser into the web UI as you; ui sessions lists the web sessions, ui revoke ID ends one',
    (y) => y.positional('action', { choices: ['link', 'sessions', 'revoke'] as const, default: 'link' as const }).positional('id', { type: 'string' }),
    (argv) =>
      run(argv, () =>
        withClient(argv.home, async (client) => {
          if (argv.action === 'sessions') {
            const reply = await client.ask<Message & { sessions: { id: string; principal: string; created: string; expires: string }[] }>('webapi', { type: 'webapi.sessions' });
            if (argv.json) printJson(reply.sessions);
            else process.stdout.write(`${table([['ID', 'WHO', 'CREATED', 'EXPIRES'], ...reply.sessions.map((session) => [session.id, session.principal, session.created, session.expires])])}\n`);
            return;
          }
          if (argv.action === 'revoke') {
            if (!argv.id) throw new AcpError('ACP_ERR_CLI_USAGE', 'acp ui revoke needs a session id, as acp ui sessions lists them');
            const reply = await client.ask<Message & { count: number }>('webapi', { type: 'webapi.session.revoke', id: argv.id });
            if (reply.count === 0) throw new AcpError('ACP_ERR_WEB_SESSION_NOT_FOUND', `no web session '${argv.id}': acp ui sessions lists them`);
            if (argv.json) printJson(reply);
            else process.stdout.write(`${reply.count} session(s) ended\n`);
            return 0;
          }
          const reply = await client.ask<Message & { url: string; expiresAt: string }>('webapi', { type: 'webapi.login-link' });
          if (argv.json) printJson(reply);
          else process.stdout.write(`${reply.url}\n(open it within a minute; it works once)\n`);
          return 0;
        }),
      ),
  )
  .command('node', 'manage the cluster\'s nodes (acp node rm NAME, acp node set NAME --management on|off, acp node maintenance on|off NAME)', (y) => nodeCommands(y, run, withClient))
  .command('cluster', 'cluster-wide operations (acp cluster status, rotate-keys)', (y) => clusterCommands(y, run, withClient))
  .command('alarm', "the cluster's alarms (acp alarm ls, ack)", (y) => alarmCommands(y, run, withClient))
  .command('ha', 'high availability: where HA systems run and what the HA manager is doing (acp ha status)', (y) => haCommands(y, run, withClient))
  .command('health', "the cluster's health score and what keeps it from 100", (y) => y, (argv) => run(argv, () => withClient(argv.home, (client) => health(client, argv.json))))
  .command('nodes', 'list the nodes the cluster database knows, with their heartbeats', (y) => y, (argv) =>
    run(argv, () => withClient(argv.home, (client) => printNodes(client, argv.json))),
  )
  .command('services', "list every node's services from the cluster database", (y) => y, (argv) =>
    run(argv, () => withClient(argv.home, (client) => printServices(client, argv.json))),
  )
  .command('chaos', 'inject faults (the daemon must run with --faults), or run a chaos scenario', (y) =>
    y
      .command(
        'crash <path>',
        'make the actor throw inside its handler, so its supervisor acts',
        (c) => c.positional('path', { type: 'string', demandOption: true }).option('reason', { type: 'string', describe: 'text carried in the crash' }),
        (argv) =>
          run(argv, () =>
            withClient(argv.home, async (client) => {
              const target = client.resolve(argv.path);
              const message: Message = argv.reason === undefined ? { type: 'chaos.crash' } : { type: 'chaos.crash', reason: argv.reason };
              try {
                await client.ask(target, message);
              } catch (error) {
                if (error instanceof AcpError && error.code === 'ACP_ERR_ACTOR_CRASHED') {
                  if (argv.json) printJson({ crashed: client.ref(target).path });
                  else process.stdout.write(`crashed ${client.ref(target).path}; its supervisor takes over\n`);
                  return;
                }
                throw error;
              }
              throw new AcpError('ACP_ERR_INTERNAL', `${client.ref(target).path} answered instead of crashing`);
            }),
          ),
      )
      .command(
        'stall <path>',
        "hold the actor's mailbox for --ms milliseconds",
        (c) => c.positional('path', { type: 'string', demandOption: true }).option('ms', { type: 'number', demandOption: true, coerce: flagOnce('ms', wholeNumber({ min: 1, max: 600_000, unit: 'milliseconds' })), describe: 'milliseconds (1-600000)' }),
        (argv) =>
          run(argv, () =>
            withClient(argv.home, async (client) => {
              const reply = await client.ask(client.resolve(argv.path), { type: 'chaos.stall', ms: argv.ms });
              if (argv.json) printJson(reply);
              else process.stdout.write(`stalling ${client.ref(client.resolve(argv.path)).path} for ${argv.ms} ms\n`);
            }),
          ),
      )
      .command(
        'run <file>',
        'run a scenario file against fresh nodes in network namespaces (--harness N) or this live cluster (--cluster), checking the HA invariants',
        (c) =>
          c
            .positional('file', { type: 'string', demandOption: true, describe: 'the scenario (JSON: name, systems, steps)' })
            .option('report', { type: 'string', describe: 'write the report (violations, recovery times) as JSON here' })
            .option('harness', { type: 'number', coerce: flagOnce('harness', wholeNumber({ min: 2, max: 9, unit: 'nodes' })), describe: 'run on N fresh nodes in network namespaces (needs root)' })
            .option('cluster', {
              type: 'boolean',
              default: false,
              describe:
                "run on this node's live cluster, every fault asked of the node's own daemon (each node must run with acp up --faults): kill (the daemon dies as by kill -9; its guests outlive it, HA ones until the fence guard fires), stop, partition (no agent or multicast traffic in or out), heal, drop and wait as in the harness; restart only after a kill of the same node, which arranges it (the killed daemon is started again with its own command line when the restart is due). The run's systems and writes are removed at the end.",
            })
            .option('bound', { type: 'string', default: '10s', describe: 'how soon after each fault every HA system must run again' }),
        (argv) =>
          run(argv, async () => {
            const { chaosRun } = await import('./chaos-run.js');
            return chaosRun({ file: argv.file, bound: argv.bound, json: argv.json, cluster: argv.cluster, home: argv.home, ...(argv.report === undefined ? {} : { report: argv.report }), ...(argv.harness === undefined ? {} : { harness: argv.harness }) });
          }),
      )
      .demandCommand(1, 'name a fault: crash, stall or run'),
  )
  .demandCommand(1, 'name a command')
  .strict()
  .help()
  .version(false)
  .fail((message, error) => {
    const acpError = error instanceof AcpError ? error : new AcpError('ACP_ERR_CLI_USAGE', `${usageMessage(message ?? error?.message ?? 'bad usage')}; see 'acp --help'`);
    process.exitCode = printError(acpError, process.argv.includes('--json'));
    process.exit(process.exitCode ?? EXIT_USAGE);
  });

await cli.parseAsync();
