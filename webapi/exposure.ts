import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { AcpError } from '../runtime/errors.js';

/** Whether an address is this machine's loopback (127.0.0.0/8, ::1, IPv4-mapped loopback, localhost). */
export function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  if (address === 'localhost' || address === '::1') return true;
  const v4 = address.startsWith('::ffff:') ? address.slice('::ffff:'.length) : address;
  return isIP(v4) === 4 && v4.startsWith('127.');
}

export interface WebTls {
  cert: Buffer;
  key: Buffer;
  /** Where they came from, for the log. */
  source: string;
}

/**
 * The certificate the web UI serves: the operator's (`webapi.tls`) whenever given; beyond loopback
 * without one, the node's own (from acp init/join); beyond loopback with neither, a refusal.
 * Loopback without `webapi.tls` is plain HTTP.
 */
export function webTls(host: string, given: { cert: string; key: string } | undefined, node: { cert: string; key: string }): WebTls | undefined {
  const read = (files: { cert: string; key: string }, source: string): WebTls => {
    for (const file of [files.cert, files.key]) {
      if (!existsSync(file)) throw new AcpError('ACP_ERR_WEB_NEEDS_TLS', `the web UI's ${source} file ${file} does not exist`);
    }
    return { cert: readFileSync(files.cert), key: readFileSync(files.key), source };
  };
  if (given) return read(given, 'certificate (webapi.tls)');
  if (isLoopback(host)) return undefined;
  if (existsSync(node.cert) && existsSync(node.key)) return read(node, 'node certificate');
  throw new AcpError(
    'ACP_ERR_WEB_NEEDS_TLS',
    `the web UI listens on ${host}, beyond loopback, only with TLS: give "webapi": {"tls": {"cert": FILE, "key": FILE}} in config.json, or acp init/join this node so it has a node certificate; or leave --web-bind off (loopback)`,
  );
}

/** Whether /metrics answers this request without a token (`webapi.metrics`). */
export function metricsOpen(policy: 'loopback' | 'token' | 'open', remote: string | undefined): boolean {
  return policy === 'open' || (policy === 'loopback' && isLoopback(remote));
}
