/**
 * `acp up`'s flags: what they are, the daemon options they make (checked here, so a bad flag is a
 * usage error before anything starts), and the same flags handed on to a detached daemon.
 */
import type { Argv } from 'yargs';
import { parseMulticast } from '../adapters/multicast.js';
import { parseHostPort } from '../adapters/tls.js';
import { checkWatchdogPath } from '../adapters/watchdog.js';
import { LOG_FORMATS, type LogLevel } from '../runtime/logger.js';
import type { UpOptions } from './control.js';
import { flagOnce, wholeNumber } from './flags.js';

interface Global {
  home: string;
  json: boolean;
  'log-level'?: LogLevel;
}

/** A port flag: 0 (a free one) to 65535. */
const PORT = { min: 0, max: 65535, what: 'a port number (0-65535)' };

export const upFlags = <T extends Global>(y: Argv<T>) =>
  y
    .option('cluster', { type: 'string', describe: "cluster name (first run only; default 'local')" })
    .option('node', { type: 'string', describe: 'node name (first run only; default: the host name)' })
    .option('detach', { type: 'boolean', default: false, describe: 'run in the background; return once every service runs' })
    .option('faults', { type: 'boolean', default: false, describe: 'allow fault injection (acp chaos ...)' })
    .option('agent', { type: 'string', describe: "this run's agent address HOST:PORT (default: config's, from acp init/join)" })
    .option('api-port', { type: 'number', coerce: flagOnce('api-port', wholeNumber(PORT)), describe: 'also serve the API on local TCP at this port' })
    .option('api-bind', { type: 'string', describe: 'loopback address for --api-port (127.0.0.1 or ::1)' })
    .option('multicast', { type: 'string', describe: 'GROUP:PORT of the cluster\'s multicast group (default: derived from the cluster name, port 5460)' })
    .option('multicast-if', { type: 'string', describe: 'interface address to join the multicast group on (default: the agent\'s address)' })
    .option('peers', { type: 'string', describe: 'unicast sync instead of multicast: comma-separated agent addresses HOST:PORT' })
    .option('gateway', { type: 'string', describe: 'L3 gateway: forward this domain\'s changes to the gateway agent(s) at HOST:PORT[,HOST:PORT]' })
    .option('web-port', { type: 'number', coerce: flagOnce('web-port', wholeNumber(PORT)), describe: "the web UI's port (default: config's, 8480; 0 picks a free one)" })
    .option('web-bind', { type: 'string', describe: "the web UI's address (default: config's, 127.0.0.1); beyond loopback it serves TLS with webapi.tls or the node certificate" })
    .option('watchdog', { type: 'string', describe: 'a hardware watchdog (e.g. /dev/watchdog) the fence guard keeps alive while it guards HA guests (default: config\'s ha.watchdog, off)' })
    .option('log-format', { choices: LOG_FORMATS, describe: 'foreground log lines: pretty (default on a terminal) or json' })
    .option('log-file', { type: 'string', hidden: true });

export type UpArgv = Awaited<ReturnType<typeof upFlags<Global>>['argv']>;

/** `a:1,b:2` → ['a:1', 'b:2'], each checked as HOST:PORT. */
function addressList(text: string | undefined, flag: string): string[] | undefined {
  if (text === undefined) return undefined;
  const list = text.split(',').map((item) => item.trim()).filter((item) => item.length > 0);
  for (const item of list) parseHostPort(item, `each address in ${flag}`);
  return list;
}

/** The daemon's options from this run's flags; a flag out of range is ACP_ERR_CLI_USAGE. */
export function upOptions(argv: UpArgv): UpOptions {
  if (argv.multicast !== undefined) parseMulticast(argv.multicast);
  checkWatchdogPath(argv.watchdog);
  return {
    home: argv.home,
    faults: argv.faults,
    ...(argv.cluster === undefined ? {} : { cluster: argv.cluster }),
    ...(argv.node === undefined ? {} : { node: argv.node }),
    ...(argv['log-level'] === undefined ? {} : { logLevel: argv['log-level'] }),
    ...(argv['log-file'] === undefined ? {} : { logFile: argv['log-file'] }),
    ...(argv.agent === undefined ? {} : { agent: argv.agent }),
    ...(argv['api-port'] === undefined ? {} : { apiPort: argv['api-port'] }),
    ...(argv['api-bind'] === undefined ? {} : { apiBind: argv['api-bind'] }),
    ...(argv['web-port'] === undefined ? {} : { webPort: argv['web-port'] }),
    ...(argv['web-bind'] === undefined ? {} : { webBind: argv['web-bind'] }),
    ...(argv.watchdog === undefined ? {} : { watchdog: argv.watchdog }),
    logFormat: argv['log-format'] ?? (process.stderr.isTTY ? 'pretty' : 'json'),
    ...(argv.multicast === undefined ? {} : { multicast: argv.multicast }),
    ...(argv['multicast-if'] === undefined ? {} : { multicastIf: argv['multicast-if'] }),
    ...(argv.peers === undefined ? {} : { peers: addressList(argv.peers, '--peers')! }),
    ...(argv.gateway === undefined ? {} : { gateways: addressList(argv.gateway, '--gateway')! }),
  };
}

/** The flags a detached daemon is started with: this run's, as given. */
export function forwardedUpFlags(argv: UpArgv): string[] {
  const given: [string, string | number | undefined][] = [
    ['--cluster', argv.cluster],
    ['--node', argv.node],
    ['--log-level', argv['log-level']],
    ['--agent', argv.agent],
    ['--api-port', argv['api-port']],
    ['--api-bind', argv['api-bind']],
    ['--web-port', argv['web-port']],
    ['--web-bind', argv['web-bind']],
    ['--multicast', argv.multicast],
    ['--multicast-if', argv['multicast-if']],
    ['--peers', argv.peers],
    ['--gateway', argv.gateway],
    ['--watchdog', argv.watchdog],
  ];
  return [...(argv.faults ? ['--faults'] : []), ...given.flatMap(([flag, value]) => (value === undefined ? [] : [flag, String(value)]))];
}
