import { readApiKey, readConfig } from '../adapters/home.js';
import { AcpClient, type ClientOptions } from '../runtime/client.js';
import { homePaths } from '../runtime/config.js';
import { AcpError } from '../runtime/errors.js';

export * from '../runtime/client.js';

/** Connects to the daemon of a home directory (its socket, cluster and API key), or with explicit options. */
export async function connect(options: { home: string; token?: string } | ClientOptions): Promise<AcpClient> {
  if (!('home' in options)) return AcpClient.connect(options);
  const paths = homePaths(options.home);
  let config;
  try {
    config = readConfig(paths);
  } catch (error) {
    throw AcpError.from(error, 'ACP_ERR_CONFIG_INVALID');
  }
  if (!config) throw new AcpError('ACP_ERR_DAEMON_NOT_RUNNING', `${options.home} has no config.json: no node was ever started there; run 'acp up --home ${options.home}'`);
  try {
    const credential = options.token !== undefined ? { token: options.token } : { apiKey: readApiKey(paths) };
    return await AcpClient.connect({ socketPath: paths.socket, ...credential, cluster: config.cluster, maxFrameBytes: config.api.maxFrameBytes });
  } catch (error) {
    throw AcpError.from(error, 'ACP_ERR_NODE_UNREACHABLE');
  }
}

