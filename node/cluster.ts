import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { PROTOCOL_VERSION } from '../runtime/codec.js';
import { ensureHome, loadOrCreateApiKey, loadOrCreateConfig, readConfig, secretExists, writeApiKey, writeConfig } from '../adapters/home.js';
import { certificateExpiry, certificateNode, createCa, createCsr, fingerprint, signCsr, verifyIssuedBy, writePublic, writeSecret } from '../adapters/pki.js';
import { decodeToken } from '../adapters/join-tokens.js';
import { dialTls, parseHostPort } from '../adapters/tls.js';
import { defaultNodeName, homePaths, nodeConfigSchema, type HomePaths } from '../runtime/config.js';
import { AcpError } from '../runtime/errors.js';
import { silentLogger } from '../runtime/logger.js';
import { assertName } from '../runtime/path.js';

function refuseIfInitialised(paths: HomePaths): void {
  if (secretExists(paths.nodeCert) || secretExists(paths.caCert)) {
    throw new AcpError('ACP_ERR_CONFIG_MISMATCH', `${paths.home} already belongs to a cluster (it has ${paths.nodeCert}); use another --home`);
  }
}

export interface InitResult {
  cluster: string;
  node: string;
  agent: string | null;
  caFingerprint: string;
}

/** `acp init`: a new cluster, with this home as its first node and the holder of its CA. */
export async function initCluster(home: string, options: { cluster: string; node?: string; agent?: string }): Promise<InitResult> {
  const paths = homePaths(home);
  assertName(options.cluster, 'cluster');
  const node = options.node ?? defaultNodeName();
  assertName(node, 'node');
  if (options.agent) parseHostPort(options.agent, '--agent');
  ensureHome(paths);
  refuseIfInitialised(paths);
  const { config } = loadOrCreateConfig(paths, { cluster: options.cluster, node });
  const ca = await createCa(options.cluster);
  const { csrPem, keyPem } = await createCsr(node);
  const cert = signCsr({ csrPem, caCertPem: ca.certPem, caKeyPem: ca.keyPem, node });
  writeSecret(paths.caKey, ca.keyPem);
  writePublic(paths.caCert, ca.certPem);
  writeSecret(paths.nodeKey, keyPem);
  writePublic(paths.nodeCert, cert);
  writeSecret(paths.clusterKey, randomBytes(32).toString('hex'));
  loadOrCreateApiKey(paths);
  writeConfig(paths, nodeConfigSchema.parse({ ...config, agent: { ...config.agent, caNode: node, ...(options.agent ? { listen: options.agent } : {}) } }));
  return { cluster: options.cluster, node, agent: options.agent ?? null, caFingerprint: fingerprint(ca.certPem) };
}

interface Joined {
  type: 'joined';
  cert: string;
  ca: string;
  clusterKey: string;
  apiKey: string;
  caNode: string;
  peers: { node: string; agent: string }[];
}

/**
 * `acp join HOST:PORT --token T`: checks, before sending anything, that the agent there presents
 * the CA the token names; then sends a CSR with the token and keeps what comes back.
 */
export async function joinCluster(home: string, address: string, tokenText: string, options: { node?: string; agent?: string; witness?: boolean }): Promise<{ cluster: string; node: string; caNode: string; peers: number; notAfter: string; witness: boolean }> {
  const paths = homePaths(home);
  const token = decodeToken(tokenText);
  const node = options.node ?? defaultNodeName(hostname());
  assertName(node, 'node');
  const { host, port } = parseHostPort(address, 'the address to join');
  if (options.agent) parseHostPort(options.agent, '--agent');
  ensureHome(paths);
  refuseIfInitialised(paths);
  const existing = readConfig(paths);
  if (existing && (existing.cluster !== token.cluster || existing.node !== node)) {
    throw new AcpError('ACP_ERR_CONFIG_MISMATCH', `${home} already is ${existing.cluster}/${existing.node}; use another --home to join ${token.cluster} as ${node}`);
  }
  if (Date.now() > token.expiresAt) throw new AcpError('ACP_ERR_PKI_TOKEN_EXPIRED', 'the join token has expired; create a new one with acp token create');
  const { csrPem, keyPem } = await createCsr(node);
  const reply = await new Promise<Joined>((resolve, reject) => {
    dialTls({ host, port, caFingerprint: token.caFingerprint, log: silentLogger() }, (connection) => ({
      frame(envelope) {
        if (envelope.k === 'reply') resolve(envelope.body as Joined);
        else if (envelope.k === 'error' && envelope.err) reject(AcpError.fromData(envelope.err));
        else reject(new AcpError('ACP_ERR_WIRE_BAD_HELLO', `unexpected answer '${envelope.k}' to the join`));
        connection.close();
      },
      badFrame: (error) => reject(error),
      closed: () => reject(new AcpError('ACP_ERR_WIRE_CLOSED', `${address} closed the connection without an answer`)),
    })).then(({ connection }) => {
      connection.send({ v: PROTOCOL_VERSION, k: 'hello', body: { cluster: token.cluster, proto: PROTOCOL_VERSION, node, join: { token: tokenText, csr: csrPem, ...(options.agent ? { agent: options.agent } : {}), ...(options.witness ? { witness: true } : {}) } } });
    }, reject);
  });
  // What came back must be what was asked for: the token's CA, and a certificate for this node from it.
  if (fingerprint(reply.ca) !== token.caFingerprint.replace(/:/g, '').toLowerCase()) {
    throw new AcpError('ACP_ERR_PKI_FINGERPRINT_MISMATCH', 'the join answer carries another CA than the token names; nothing was written');
  }
  if (!verifyIssuedBy(reply.cert, reply.ca) || certificateNode(reply.cert) !== node) {
    throw new AcpError('ACP_ERR_PKI_BAD_CERT', `the join answer's certificate is not one for '${node}' from the cluster CA; nothing was written`);
  }
  writePublic(paths.caCert, reply.ca);
  writeSecret(paths.nodeKey, keyPem);
  writePublic(paths.nodeCert, reply.cert);
  writeSecret(paths.clusterKey, reply.clusterKey);
  writeApiKey(paths, reply.apiKey);
  const base = existing ?? nodeConfigSchema.parse({ cluster: token.cluster, node });
  writeConfig(paths, nodeConfigSchema.parse({ ...base, ...(options.witness ? { witness: true } : {}), agent: { ...base.agent, caNode: reply.caNode, seeds: reply.peers, ...(options.agent ? { listen: options.agent } : {}) } }));
  return { cluster: token.cluster, node, caNode: reply.caNode, peers: reply.peers.length, notAfter: certificateExpiry(reply.cert).toISOString(), witness: options.witness === true };
}
