import type { Argv } from 'yargs';
import type { HealthReply } from '../actors/monitor/index.js';
import { alarmTargetObjectSchema, type AlarmObject, type AlarmTargetObject } from '../actors/model.js';
import type { AcpClient } from '../runtime/client.js';
import { AcpError } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import { printJson, table } from './output.js';

interface Global {
  home: string;
  json: boolean;
}

type Run = (argv: Global, body: () => Promise<number | void>) => Promise<void>;
type WithClient = <T>(home: string, work: (client: AcpClient) => Promise<T>) => Promise<T>;

const primaryMonitor = (client: AcpClient) => `acp://${client.node.cluster}/@primary/monitor`;

async function listAlarms(client: AcpClient): Promise<AlarmObject[]> {
  const alarms: AlarmObject[] = [];
  let cursor: string | undefined;
  do {
    const page = await client.ask<Message & { records: { value: AlarmObject; deleted?: true }[]; cursor?: string }>('cdb', { type: 'cdb.list', prefix: 'object/alarm/', limit: 1000, ...(cursor === undefined ? {} : { cursor }) });
    alarms.push(...page.records.filter((record) => !record.deleted).map((record) => record.value));
    cursor = page.cursor;
  } while (cursor !== undefined);
  const rank = { critical: 0, major: 1, warning: 2, info: 3 } as const;
  return alarms.sort((a, b) => Number(b.open) - Number(a.open) || rank[a.severity] - rank[b.severity] || a.name.localeCompare(b.name));
}

/** `acp alarm ls [--all]`, `acp alarm ack ID`. */
export function alarmCommands(y: Argv<Global>, run: Run, withClient: WithClient): Argv<Global> {
  return y
    .command(
      'ls',
      'the open alarms (--all: the cleared ones too), most severe first',
      (c) => c.option('all', { type: 'boolean', default: false, describe: 'include cleared alarms' }),
      (argv) =>
        run(argv, () =>
          withClient(argv.home, async (client) => {
            const alarms = (await listAlarms(client)).filter((alarm) => argv.all || alarm.open);
            if (argv.json) {
              for (const alarm of alarms) printJson(alarm);
              return;
            }
            if (alarms.length === 0) {
              process.stdout.write(argv.all ? 'no alarms\n' : 'no open alarms\n');
              return;
            }
            const rows = alarms.map((alarm) => [alarm.name, alarm.open ? 'open' : 'cleared', alarm.severity, String(alarm.term), alarm.by, alarm.open ? alarm.raisedAt : (alarm.clearedAt ?? '-'), alarm.acked ? 'yes' : '-', alarm.detail]);
            process.stdout.write(`${table([['ID', 'STATE', 'SEVERITY', 'TERM', 'BY', 'SINCE', 'ACKED', 'DETAIL'], ...rows])}\n`);
          }),
        ),
    )
    .command(
      'ack <id>',
      'acknowledge an alarm (kept on it by the primary, with who and when)',
      (c) => c.positional('id', { type: 'string', demandOption: true }),
      (argv) =>
        run(argv, () =>
          withClient(argv.home, async (client) => {
            const reply = await client.ask<Message & { id: string; term: number }>(primaryMonitor(client), { type: 'monitor.alarm.ack', id: argv.id });
            if (argv.json) printJson(reply);
            else process.stdout.write(`alarm ${reply.id} acknowledged (term ${reply.term})\n`);
          }),
        ),
    )
    .command('target', 'where alarm notifications go (acp alarm target add, test, ls, rm)', (t) => targetCommands(t, run, withClient))
    .demandCommand(1, 'name an alarm command: ls, ack, target');
}

export function formatHealth(health: HealthReply): string {
  const lines = [`health ${health.score}/100 (computed by ${health.by}${health.primary ? ', the primary' : ', not the primary: no primary holds the lease'})`];
  const nodes = Object.entries(health.nodes);
  if (nodes.length > 0) lines.push(`nodes  ${nodes.map(([name, score]) => `${name} ${score}`).join(', ')}`);
  if (health.contributions.length > 0) {
    lines.push(table([['-POINTS', 'WHY'], ...health.contributions.map((entry) => [`-${entry.points}`, entry.what])]));
  }
  return `${lines.join('\n')}\n`;
}

/** `acp health`: asked of the primary; with none, of this node's monitor, saying so. */
export async function health(client: AcpClient, json: boolean): Promise<void> {
  let reply: HealthReply;
  try {
    reply = await client.ask<HealthReply>(primaryMonitor(client), { type: 'monitor.health' });
  } catch (error) {
    if (!(error instanceof AcpError) || error.code !== 'ACP_ERR_NO_PRIMARY') throw error;
    reply = await client.ask<HealthReply>('monitor', { type: 'monitor.health' });
  }
  if (json) printJson(reply);
  else process.stdout.write(formatHealth(reply));
}

const TARGET_FLAGS: Readonly<Record<string, string>> = { name: 'the target name', webhook: '--webhook', minSeverity: '--min-severity', bearer: '--bearer', hmacSecret: '--hmac-secret' };

/**
 * The target `acp alarm target add` writes, checked by the schema the CDB applies, the refusal
 * naming the flag: a flag given empty is an error, not a flag left out.
 */
export function targetValue(flags: { name: string; webhook: string; minSeverity: string; bearer?: string | undefined; hmacSecret?: string | undefined }): AlarmTargetObject {
  const { bearer, hmacSecret, ...rest } = flags;
  const result = alarmTargetObjectSchema.safeParse({ ...rest, ...(bearer === undefined ? {} : { bearer }), ...(hmacSecret === undefined ? {} : { hmacSecret }) });
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const field = String(issue.path[0] ?? '');
  throw new AcpError('ACP_ERR_CLI_USAGE', `${TARGET_FLAGS[field] ?? `field '${issue.path.join('.')}'`}: ${issue.message}; nothing was written`);
}

/** `acp alarm target add|test|ls|rm`: webhooks the primary POSTs alarm changes to. */
function targetCommands(y: Argv<Global>, run: Run, withClient: WithClient): Argv<Global> {
  return y
    .command(
      'add <name>',
      'add (or replace) a webhook target: an HTTP POST of JSON for every alarm raised or cleared at --min-severity or above (admin: targets hold secrets)',
      (c) =>
        c
          .positional('name', { type: 'string', demandOption: true })
          .option('webhook', { type: 'string', demandOption: true, describe: 'http(s) URL to POST to' })
          .option('min-severity', { choices: ['critical', 'major', 'warning', 'info'] as const, default: 'warning' as const })
          .option('bearer', { type: 'string', describe: 'sent as Authorization: Bearer ...' })
          .option('hmac-secret', { type: 'string', describe: 'signs the body: X-ACP-Signature: sha256=<hex> (16 characters or more)' }),
      (argv) =>
        run(argv, () =>
          withClient(argv.home, async (client) => {
            const value = targetValue({ name: argv.name, webhook: argv.webhook, minSeverity: argv['min-severity'], bearer: argv.bearer, hmacSecret: argv['hmac-secret'] });
            await client.ask('cdb', { type: 'cdb.put', key: `object/alarm-target/${argv.name}`, value });
            if (argv.json) printJson({ target: value.name, webhook: value.webhook, minSeverity: value.minSeverity });
            else process.stdout.write(`alarm target ${argv.name} added; try it: acp alarm target test ${argv.name}\n`);
          }),
        ),
    )
    .command(
      'test <name>',
      'have the primary POST a test notification to the target now',
      (c) => c.positional('name', { type: 'string', demandOption: true }),
      (argv) =>
        run(argv, () =>
          withClient(argv.home, async (client) => {
            const reply = await client.ask<Message & { target: string; status: number }>(primaryMonitor(client), { type: 'monitor.alarm.test', target: argv.name }, { timeoutMs: 10_000 });
            if (argv.json) printJson(reply);
            else process.stdout.write(`alarm target ${reply.target} answered HTTP ${reply.status}\n`);
          }),
        ),
    )
    .command(
      'ls',
      'the alarm targets (admin: they hold secrets)',
      (c) => c,
      (argv) =>
        run(argv, () =>
          withClient(argv.home, async (client) => {
            const page = await client.ask<Message & { records: { value: { name: string; webhook: string; minSeverity: string; bearer?: string; hmacSecret?: string }; deleted?: true }[] }>('cdb', { type: 'cdb.list', prefix: 'object/alarm-target/', limit: 1000 });
            const targets = page.records.filter((record) => !record.deleted).map((record) => ({ name: record.value.name, webhook: record.value.webhook, minSeverity: record.value.minSeverity, bearer: Boolean(record.value.bearer), hmac: Boolean(record.value.hmacSecret) }));
            if (argv.json) for (const target of targets) printJson(target);
            else if (targets.length === 0) process.stdout.write('no alarm targets\n');
            else process.stdout.write(`${table([['NAME', 'WEBHOOK', 'MIN-SEVERITY', 'BEARER', 'HMAC'], ...targets.map((target) => [target.name, target.webhook, target.minSeverity, target.bearer ? 'yes' : '-', target.hmac ? 'yes' : '-'])])}\n`);
          }),
        ),
    )
    .command(
      'rm <name>',
      'remove an alarm target',
      (c) => c.positional('name', { type: 'string', demandOption: true }),
      (argv) =>
        run(argv, () =>
          withClient(argv.home, async (client) => {
            await client.ask('cdb', { type: 'cdb.delete', key: `object/alarm-target/${argv.name}` });
            if (!argv.json) process.stdout.write(`alarm target ${argv.name} removed\n`);
          }),
        ),
    )
    .demandCommand(1, 'name a target command: add, test, ls, rm');
}
