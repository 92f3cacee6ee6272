import { dialTls, parseHostPort, type TlsMaterial } from '../../adapters/tls.js';
import { PROTOCOL_VERSION } from '../../runtime/codec.js';
import { AcpError } from '../../runtime/errors.js';
import type { Logger } from '../../runtime/logger.js';

export interface IdentifyOptions {
  cluster: string;
  self: string;
  incarnation: number;
  apiKey: string;
  material: TlsMaterial;
  log: Logger;
  maxFrameBytes: number;
  timeoutMs: number;
}

/**
 * Dials an address and reads which node of the cluster answers there, from its certificate and its
 * hello (they must agree). For --peers and --gateway addresses, known by address only.
 */
export async function identifyAgent(address: string, options: IdentifyOptions): Promise<string> {
  const { cluster, self } = options;
  const { host, port } = parseHostPort(address, 'a peer or gateway address');
  const node = await new Promise<string>((resolve, reject) => {
    let certificateName: string | undefined;
    dialTls({ host, port, material: options.material, log: options.log, maxFrameBytes: options.maxFrameBytes, timeoutMs: options.timeoutMs }, (conn) => ({
      frame(envelope) {
        const body = envelope.body as { node?: unknown; cluster?: unknown } | undefined;
        if (envelope.k === 'hello' && typeof body?.node === 'string' && body.cluster === cluster && (certificateName === undefined || certificateName === body.node)) resolve(body.node);
        else reject(new AcpError('ACP_ERR_WIRE_BAD_HELLO', `${address} did not answer as a node of cluster '${cluster}'`));
        conn.close();
      },
      badFrame: (error) => reject(error),
      closed: () => reject(new AcpError('ACP_ERR_WIRE_CLOSED', `${address} closed the connection before saying who it is`)),
    })).then(({ connection, socket }) => {
      const subject = socket.getPeerCertificate()?.subject?.CN;
      certificateName = Array.isArray(subject) ? subject[0] : subject;
      connection.send({ v: PROTOCOL_VERSION, k: 'hello', body: { cluster, node: self, incarnation: options.incarnation, apiKey: options.apiKey, proto: PROTOCOL_VERSION, role: 'client' } });
    }, reject);
  });
  if (node === self) throw new AcpError('ACP_ERR_TARGET_IS_SELF', `${address} is this node's own agent`);
  return node;
}
