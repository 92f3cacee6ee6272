import type { Argv } from 'yargs';
import type { AcpClient } from '../runtime/client.js';
import { AcpError } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import type { NodeMeta, ServiceMeta } from '../actors/model.js';
import type { RecordView } from '../actors/cdb/index.js';
import type { MemberView } from '../actors/cdb/sync.js';
import { flagOnce, wholeNumber } from './flags.js';
import { formatDuration, printJson, table } from './output.js';

export interface CdbGlobal {
  home: string;
  json: boolean;
}

type WithClient = <T>(home: string, work: (client: AcpClient) => Promise<T>) => Promise<T>;
type Run = (argv: CdbGlobal, body: () => Promise<number | void>) => Promise<void>;

function parseValue(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new AcpError('ACP_ERR_CLI_BAD_JSON', `the value is not valid JSON (${(error as Error).message}): ${text}`);
  }
}

/** Every record under a prefix, page by page (up to `limit`). */
export async function listAll(client: AcpClient, prefix: string, limit = Number.POSITIVE_INFINITY): Promise<RecordView[]> {
  const records: RecordView[] = [];
  let cursor: string | undefined;
  do {
    const page = await client.ask<Message & { records: RecordView[]; cursor?: string }>('cdb', {
      type: 'cdb.list',
      prefix,
      limit: Math.min(1000, limit - records.length),
      ...(cursor === undefined ? {} : { cursor }),
    });
    records.push(...page.records);
    cursor = page.cursor;
  } while (cursor !== undefined && records.length < limit);
  return records;
}

function compact(value: unknown): string {
  const text = JSON.stringify(value);
  return text.length > 100 ? `${text.slice(0, 97)}...` : text;
}

/** `acp cdb get|ls|put|rm|watch`. */
export function cdbCommands(y: Argv<CdbGlobal>, run: Run, withClient: WithClient): Argv<CdbGlobal> {
  return y
    .command(
      'get <key>',
      'print one record',
      (c) => c.positional('key', { type: 'string', demandOption: true }),
      (argv) =>
        run(argv, () =>
          withClient(argv.home, async (client) => {
            const reply = await client.ask<Message & { record: RecordView }>('cdb', { type: 'cdb.get', key: argv.key });
            if (argv.json) printJson(reply.record);
            else process.stdout.write(`${JSON.stringify(reply.record.value, null, 2)}\nversion ${reply.record.version} (origin ${reply.record.origin})\n`);
          }),
        ),
    )
    .command(
      'ls [prefix]',
      'list records under a prefix (all pages)',
      (c) => c.positional('prefix', { type: 'string', default: '' }).option('limit', { type: 'number', coerce: flagOnce('limit', wholeNumber({ min: 1 })), describe: 'at most this many records' }),
      (argv) =>
        run(argv, () =>
          withClient(argv.home, async (client) => {
            const records = await listAll(client, argv.prefix, argv.limit);
            if (argv.json) {
              for (const record of records) printJson(record);
              return;
            }
            if (records.length === 0) {
              process.stdout.write(`no records under '${argv.prefix}'\n`);
              return;
            }
            process.stdout.write(`${table([['KEY', 'VERSION', 'VALUE'], ...records.map((record) => [record.key, record.version, compact(record.value)])])}\n`);
          }),
        ),
    )
    .command(
      'put <key> <value>',
      'write a record (objects are validated against their type; the reply comes once it is on disk)',
      (c) => c.positional('key', { type: 'string', demandOption: true }).positional('value', { type: 'string', demandOption: true }).option('expect', { type: 'string', describe: "write only if the record is at this version ('none': only if absent)" }),
      (argv) =>
        run(argv, async () => {
          const value = parseValue(argv.value);
          await withClient(argv.home, async (client) => {
            const message: Message =
              argv.expect === undefined
                ? { type: 'cdb.put', key: argv.key, value }
                : { type: 'cdb.cas', key: argv.key, value, expect: argv.expect === 'none' ? null : argv.expect };
            const reply = await client.ask<Message & { version: string }>('cdb', message);
            if (argv.json) printJson(reply);
            else process.stdout.write(`${argv.key} version ${reply.version}\n`);
          });
        }),
    )
    .command(
      'rm <key>',
      'delete a record (leaves a tombstone)',
      (c) => c.positional('key', { type: 'string', demandOption: true }),
      (argv) =>
        run(argv, () =>
          withClient(argv.home, async (client) => {
            const reply = await client.ask<Message & { version: string }>('cdb', { type: 'cdb.delete', key: argv.key });
            if (argv.json) printJson(reply);
            else process.stdout.write(`${argv.key} deleted (version ${reply.version})\n`);
          }),
        ),
    )
    .command(
      'hash [prefix]',
      'a digest of the records under a prefix (default object/): equal on two nodes means they hold the same records',
      (c) => c.positional('prefix', { type: 'string', default: 'object/' }),
      (argv) =>
        run(argv, () =>
          withClient(argv.home, async (client) => {
            const reply = await client.ask<Message & { hash: string; records: number; prefix: string }>('cdb', { type: 'cdb.hash', prefix: argv.prefix });
            if (argv.json) printJson(reply);
            else process.stdout.write(`${reply.hash}  ${reply.records} record(s) under ${reply.prefix}\n`);
          }),
        ),
    )
    .command(
      'watch [prefix]',
      'print the records under a prefix, then every change, until interrupted (--json: NDJSON)',
      (c) => c.positional('prefix', { type: 'string', default: '' }),
      (argv) => run(argv, () => watchPrefix(argv.home, argv.prefix, argv.json, withClient)),
    )
    .demandCommand(1, 'name a cdb command: get, ls, put, rm or watch');
}

/** Streams a prefix until SIGINT; resubscribes (and says so) whenever the node ends the stream. */
async function watchPrefix(home: string, prefix: string, json: boolean, withClient: WithClient): Promise<number> {
  return withClient(home, (client) =>
    new Promise<number>((resolve, reject) => {
      let current: { cancel(): void } | undefined;
      const print = (line: string, data: unknown) => process.stdout.write(json ? `${JSON.stringify(data)}\n` : `${line}\n`);
      const subscribe = () => {
        current = client.subscribe(
          'cdb',
          { type: 'cdb.watch', prefix },
          (event) => {
            switch (event.type) {
              case 'cdb.snapshot':
                for (const record of (event as Message & { records: RecordView[] }).records) print(`= ${record.key} ${compact(record.value)}`, { event: 'snapshot', ...record });
                return;
              case 'cdb.events': {
                const { seq, records } = event as Message & { seq: number; records: RecordView[] };
                records.forEach((record, index) => {
                  print(record.deleted ? `- ${record.key}` : `~ ${record.key} ${compact(record.value)}`, { event: record.deleted ? 'delete' : 'put', seq: seq + index, ...record });
                });
                return;
              }
              case 'watch.ended':
                print(`! stream ended (${String(event.reason)}); resubscribing`, { event: 'resubscribe', reason: event.reason });
                setTimeout(subscribe, 200);
                return;
              default:
                return;
            }
          },
          (error) => {
            if (error.code === 'ACP_ERR_NO_SUCH_ACTOR') {
              print(`! cdb is not running (${error.message}); retrying`, { event: 'retry', reason: error.message });
              setTimeout(subscribe, 500);
            } else {
              reject(error);
            }
          },
        );
      };
      subscribe();
      process.once('SIGINT', () => {
        current?.cancel();
        resolve(0);
      });
    }),
  );
}

/** `acp nodes`: every node the CDB knows, with its heartbeat. */
/** `acp nodes`: membership as this node sees it, with what each node's heartbeat says. */
export async function printNodes(client: AcpClient, json: boolean): Promise<void> {
  const [membership, metas] = await Promise.all([client.ask<Message & { nodes: MemberView[] }>('cdb', { type: 'cdb.nodes' }), listAll(client, 'meta/node/')]);
  const rows = membership.nodes.map((member) => {
    const meta = metas.find((candidate) => candidate.key === `meta/node/${member.node}@${member.node}`)?.value as NodeMeta | undefined;
    return {
      name: member.node,
      state: member.state,
      lastSeenMs: member.lastSeenMs,
      incarnation: member.incarnation ?? meta?.incarnation ?? null,
      syncLag: member.syncLag,
      uptimeMs: meta?.uptimeMs ?? null,
      eventLoopDelayMs: meta?.eventLoopDelayMs ?? null,
      ...(member.self ? { self: true } : {}),
    };
  });
  if (json) {
    printJson(rows);
    return;
  }
  process.stdout.write(
    `${table([
      ['NODE', 'STATE', 'LAST SEEN', 'INCARNATION', 'SYNC LAG', 'UPTIME', 'LOOP DELAY p99'],
      ...rows.map((row) => [
        row.self ? `${row.name} (this node)` : row.name,
        row.state,
        row.self ? '-' : row.lastSeenMs === null ? 'never' : `${(row.lastSeenMs / 1000).toFixed(1)}s ago`,
        String(row.incarnation ?? '-'),
        row.syncLag === null ? '-' : `${row.syncLag} change(s)`,
        row.uptimeMs === null ? '-' : formatDuration(row.uptimeMs),
        row.eventLoopDelayMs ? `${row.eventLoopDelayMs.p99} ms` : '-',
      ]),
    ])}\n`,
  );
}

/** `acp services`: every service of every node, from the CDB. */
export async function printServices(client: AcpClient, json: boolean): Promise<void> {
  const metas = await listAll(client, 'meta/service/');
  const rows = metas.map((record) => {
    const [, , service, rest] = record.key.split('/');
    const node = rest!.split('@')[0]!;
    const meta = record.value as ServiceMeta;
    return { service: service!, node, ...meta };
  });
  if (json) {
    printJson(rows);
    return;
  }
  process.stdout.write(
    `${table([
      ['SERVICE', 'NODE', 'STATE', 'RESTARTS', 'ISOLATION', 'PID', 'SINCE'],
      ...rows.map((row) => [row.service, row.node, row.state, String(row.restarts), row.isolation, row.pid === null ? '-' : String(row.pid), row.since]),
    ])}\n`,
  );
}
