import type { Argv } from 'yargs';
import type { TokenView } from '../actors/api/tokens.js';
import type { AcpClient } from '../runtime/client.js';
import { AcpError } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import { ROLES, type Role } from '../runtime/principal.js';
import { tokenId } from '../runtime/tokens.js';
import { parseDuration } from './duration.js';
import { printJson, table } from './output.js';

/**
 * The API token an invocation speaks with: `--token`, else $ACP_TOKEN, else none (the home's API
 * key). An empty one is a mistake (`--token "$T"` with T unset), never "use the home's API key":
 * that would run as admin.
 */
export function speakingToken(flag: string | undefined, env: string | undefined): string | undefined {
  // --token given twice is refused before this, with every other repeated flag (refuseRepeatedFlags).
  if (flag === '') throw new AcpError('ACP_ERR_CLI_USAGE', "--token is empty: give an API token (acp token api create), or leave --token out to speak with the home's API key");
  if (flag === undefined && env === '') throw new AcpError('ACP_ERR_CLI_USAGE', "ACP_TOKEN is set but empty: set it to an API token, or unset it to speak with the home's API key");
  return flag ?? env;
}

interface Global {
  home: string;
  json: boolean;
}

type Run = (argv: Global, body: () => Promise<number | void>) => Promise<void>;
type WithClient = <T>(home: string, work: (client: AcpClient) => Promise<T>) => Promise<T>;

interface Created extends Message {
  id: string;
  role: Role;
  secret: string;
  createdAt: string;
  expiresAt: string | null;
}

/** `acp token api create|ls|rm`: API tokens with a role, for scripts, the CLI and the web UI. */
export function apiTokenCommands(y: Argv<Global>, run: Run, withClient: WithClient): Argv<Global> {
  return y
    .command(
      'create',
      'create an API token and print its secret once (admin)',
      (c) =>
        c
          .option('role', { choices: ROLES, demandOption: true, describe: 'auditor: read and watch; operator: also run systems and write objects; admin: everything' })
          .option('ttl', { type: 'string', describe: 'how long it is valid (e.g. 12h, 30d); default: until removed' })
          .option('comment', { type: 'string', describe: 'what or who it is for (up to 200 characters)' }),
      (argv) =>
        run(argv, () =>
          withClient(argv.home, async (client) => {
            const reply = await client.ask<Created>('api', {
              type: 'api.token.create',
              role: argv.role,
              ...(argv.ttl === undefined ? {} : { ttlMs: parseDuration(argv.ttl) }),
              ...(argv.comment === undefined ? {} : { comment: argv.comment }),
            });
            if (argv.json) {
              printJson(reply);
              return;
            }
            process.stdout.write(`${reply.secret}\n`);
            process.stderr.write(`token ${reply.id} (${reply.role}${reply.expiresAt ? `, until ${reply.expiresAt}` : ', no expiry'}): shown once; use it with acp --token or ACP_TOKEN\n`);
          }),
        ),
    )
    .command(
      'ls',
      'list API tokens: id, role, created, expires, last used on this node (admin)',
      (c) => c,
      (argv) =>
        run(argv, () =>
          withClient(argv.home, async (client) => {
            const reply = await client.ask<Message & { tokens: TokenView[] }>('api', { type: 'api.token.list' });
            if (argv.json) {
              printJson(reply.tokens);
              return;
            }
            const rows = reply.tokens.map((token) => [token.id, token.role, token.createdAt, token.expiresAt ?? 'never', token.lastUsedAt ?? '-', token.comment ?? '']);
            process.stdout.write(`${table([['ID', 'ROLE', 'CREATED', 'EXPIRES', 'LAST USED', 'COMMENT'], ...rows])}\n`);
          }),
        ),
    )
    .command(
      'rm <id>',
      'revoke an API token at once, on every node (admin); ID or the token itself',
      (c) => c.positional('id', { type: 'string', demandOption: true }),
      (argv) =>
        run(argv, () =>
          withClient(argv.home, async (client) => {
            const id = tokenId(argv.id) ?? argv.id;
            const reply = await client.ask('api', { type: 'api.token.remove', id });
            if (argv.json) printJson(reply);
            else process.stdout.write(`token ${id} revoked\n`);
          }),
        ),
    )
    .demandCommand(1, 'name an api token command: create, ls or rm');
}
