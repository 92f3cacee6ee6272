import { z } from 'zod';
import type { FrameConnection, FrameHandler } from '../../adapters/frame-listener.js';
import { readSecretFile } from '../../adapters/home.js';
import { signCsr } from '../../adapters/pki.js';
import { decodeToken, type TokenLedger } from '../../adapters/join-tokens.js';
import type { TlsPeer } from '../../adapters/tls.js';
import { PROTOCOL_VERSION } from '../../runtime/codec.js';
import type { HomePaths } from '../../runtime/config.js';
import { AcpError } from '../../runtime/errors.js';
import type { Logger } from '../../runtime/logger.js';
import { isValidName, NAME_RULE } from '../../runtime/path.js';

const joinHelloSchema = z.object({
  cluster: z.string().max(63),
  proto: z.literal(PROTOCOL_VERSION),
  node: z.string().max(63),
  join: z.object({ token: z.string().max(2048), csr: z.string().max(16_384), agent: z.string().max(300).optional(), witness: z.boolean().optional() }),
});

/** What a join session needs from its agent. */
export interface JoinEnv {
  cluster: string;
  self: string;
  selfAddress: string | undefined;
  paths: HomePaths;
  ledger: TokenLedger;
  helloTimeoutMs: number;
  log: Logger;
  apiKey(): string;
  countRefusal(): void;
  /** Whether a node of that name is already known. */
  knows(node: string): boolean;
  /** Every other node this agent knows, with its agent address. */
  peers(): { node: string; agent: string }[];
  /** Records a peer's agent address (and, at a join, that it is a witness) in its node object. */
  remember(node: string, address: string | undefined, witness?: true): void;
}

/** CA node: a new node with a one-time token asks for its certificate and the cluster's secrets. */
export function joinSession(connection: FrameConnection, peer: TlsPeer, env: JoinEnv): FrameHandler {
  const { cluster, self, paths, ledger } = env;
  const timer = setTimeout(
    () => refuse(new AcpError('ACP_ERR_AGENT_BAD_CERT', `no client certificate, and no join hello within ${env.helloTimeoutMs} ms`)),
    env.helloTimeoutMs,
  );
  timer.unref();
  const refuse = (error: AcpError) => {
    clearTimeout(timer);
    env.log.warn({ remote: peer.remoteAddress, code: error.code, reason: error.message }, 'join refused');
    env.countRefusal();
    connection.close({ v: PROTOCOL_VERSION, k: 'error', err: error.toData() });
  };
  let done = false;
  return {
    frame: (envelope) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const parsed = joinHelloSchema.safeParse(envelope.body);
      if (envelope.k !== 'hello' || !parsed.success) {
        refuse(new AcpError('ACP_ERR_AGENT_BAD_CERT', 'a client certificate from the cluster CA is required (or a join hello with a token)'));
        return;
      }
      const hello = parsed.data;
      try {
        if (hello.cluster !== cluster) throw new AcpError('ACP_ERR_WIRE_BAD_HELLO', `this is not cluster '${hello.cluster}'`);
        const token = decodeToken(hello.join.token);
        if (token.cluster !== cluster) throw new AcpError('ACP_ERR_WIRE_BAD_HELLO', 'the token is not for this cluster');
        // Nothing about the cluster's members is revealed, and no work done, before the token checks out.
        ledger.check(token.id, token.secret);
        if (!isValidName(hello.node)) throw new AcpError('ACP_ERR_NAME_INVALID', `bad hello: field 'node': ${JSON.stringify(hello.node)} is not a valid name: ${NAME_RULE}`);
        if (hello.node === self || env.knows(hello.node)) {
          throw new AcpError(
            'ACP_ERR_WIRE_BAD_HELLO',
            `a node named '${hello.node}' is already in the cluster; join with another --node (to replace it, first remove it: acp cdb rm object/node/${hello.node} on ${self}, then restart ${self})`,
          );
        }
        const caPem = readSecretFile(paths.caCert);
        // Sign first: a bad CSR must not burn the token.
        const cert = signCsr({ csrPem: hello.join.csr, caCertPem: caPem, caKeyPem: readSecretFile(paths.caKey), node: hello.node });
        ledger.consume(token.id, token.secret);
        env.remember(hello.node, hello.join.agent, hello.join.witness === true ? true : undefined);
        const peers = env.peers().filter(({ node }) => node !== hello.node);
        if (env.selfAddress) peers.push({ node: self, agent: env.selfAddress });
        clearTimeout(timer);
        env.log.info({ node: hello.node, remote: peer.remoteAddress }, 'node joined');
        connection.close({
          v: PROTOCOL_VERSION,
          k: 'reply',
          body: { type: 'joined', cert, ca: caPem, clusterKey: readSecretFile(paths.clusterKey), apiKey: env.apiKey(), caNode: self, peers },
        });
      } catch (error) {
        refuse(AcpError.from(error, 'ACP_ERR_WIRE_BAD_HELLO'));
      }
    },
    badFrame: (error) => refuse(error),
    closed: () => clearTimeout(timer),
  };
}
