import { X509Certificate } from 'node:crypto';
import type { Socket } from 'node:net';
import { connect as tlsConnect, createServer, type DetailedPeerCertificate, type Server, type TLSSocket } from 'node:tls';
import { DEFAULT_MAX_HELLO_FRAME_BYTES } from '../runtime/codec.js';
import { AcpError, errorMessage } from '../runtime/errors.js';
import { attachFrames, type FrameConnection, type FrameHandler, type FrameSocketOptions } from './frame-listener.js';

/** A node's TLS identity: its key, its certificate, and the cluster CA's certificate (PEM). */
export interface TlsMaterial {
  readonly key: string;
  readonly cert: string;
  readonly ca: string;
}

/** What the TLS handshake established about the peer. */
export interface TlsPeer {
  /** The client presented a certificate at all. */
  readonly hasCertificate: boolean;
  /** It chains to the cluster CA and is within its validity. */
  readonly authorized: boolean;
  /** Why not, as OpenSSL says it (e.g. CERT_HAS_EXPIRED, UNABLE_TO_VERIFY_LEAF_SIGNATURE). */
  readonly authorizationError: string | undefined;
  /** The certificate's common name: the node (or client) name. */
  readonly commonName: string | undefined;
  /** When the certificate became valid (ms since the epoch): a node's removal revokes those issued before it. */
  readonly validFromMs: number | undefined;
  readonly remoteAddress: string | undefined;
}

export interface TlsListenerOptions extends FrameSocketOptions {
  host: string;
  port: number;
  maxConnections?: number;
  handshakeTimeoutMs?: number;
  material: TlsMaterial;
  accept(connection: FrameConnection, peer: TlsPeer): FrameHandler;
}

function serverContext(material: TlsMaterial) {
  // The server sends its certificate with the CA after it, so a joining node can check the CA's fingerprint.
  return { key: material.key, cert: `${material.cert.trim()}\n${material.ca.trim()}\n`, ca: [material.ca] };
}

/**
 * The agent's TLS 1.3 listener. Client certificates are requested and checked against the cluster
 * CA, but the decision is the caller's (a joining node has none yet), made from `TlsPeer`.
 */
export class TlsFrameListener {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private nextId = 0;

  constructor(private readonly options: TlsListenerOptions) {}

  get port(): number | undefined {
    const address = this.server?.address();
    return typeof address === 'object' && address ? address.port : undefined;
  }

  get connections(): number {
    return this.sockets.size;
  }

  async listen(): Promise<void> {
    const server = createServer({
      ...serverContext(this.options.material),
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.3',
      // A socket that never finishes its handshake must not hold a connection slot for long.
      handshakeTimeout: this.options.handshakeTimeoutMs ?? 5000,
    });
    server.maxConnections = this.options.maxConnections ?? 1024;
    server.on('secureConnection', (socket: TLSSocket) => this.onSocket(socket));
    server.on('tlsClientError', (error, socket) => {
      this.options.log.warn({ remote: socket.remoteAddress, err: errorMessage(error) }, 'agent connection refused: TLS handshake failed');
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error: NodeJS.ErrnoException) => {
        reject(new AcpError('ACP_ERR_AGENT_LISTEN', `the agent cannot listen on ${this.options.host}:${this.options.port}: ${error.code ?? error.message}; choose another --agent address`));
      });
      server.listen(this.options.port, this.options.host, () => resolve());
    });
    server.on('error', (error) => this.options.log.error({ err: errorMessage(error) }, 'agent listener error'));
    this.server = server;
  }

  /** Swaps the certificate for new connections; existing ones carry on (rotation without downtime). */
  setMaterial(material: TlsMaterial): void {
    this.server?.setSecureContext(serverContext(material));
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const socket of this.sockets) socket.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private onSocket(socket: TLSSocket): void {
    this.sockets.add(socket);
    // Frames are already gathered per event-loop turn (attachFrames): Nagle would only add delay.
    socket.setNoDelay(true);
    socket.on('close', () => this.sockets.delete(socket));
    const certificate = socket.getPeerCertificate();
    const hasCertificate = certificate !== null && Object.keys(certificate).length > 0;
    const authorizationError = socket.authorizationError;
    const peer: TlsPeer = {
      hasCertificate,
      authorized: socket.authorized,
      authorizationError: authorizationError === undefined || authorizationError === null ? undefined : String(authorizationError),
      commonName: hasCertificate ? firstName(certificate.subject?.CN) : undefined,
      validFromMs: hasCertificate && certificate.valid_from ? Date.parse(certificate.valid_from) : undefined,
      remoteAddress: socket.remoteAddress,
    };
    // Before a hello the peer is nobody yet (a joining node, a script, or anyone who reached the port).
    const options = { maxHelloFrameBytes: DEFAULT_MAX_HELLO_FRAME_BYTES, ...this.options };
    const attached = attachFrames(socket, `a${++this.nextId}`, options, (connection) => this.options.accept(connection, peer));
    if (!attached) this.sockets.delete(socket);
  }
}

function firstName(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

export interface DialOptions extends FrameSocketOptions {
  host: string;
  port: number;
  /** Our identity; absent when joining (we have no certificate yet). */
  material?: TlsMaterial;
  /** The node we expect to reach: its certificate's common name must match. */
  expectNode?: string;
  /** Joining: the CA certificate the server sends must have this SHA-256 fingerprint. */
  caFingerprint?: string;
  timeoutMs?: number;
}

function normalizeFingerprint(value: string): string {
  return value.replace(/:/g, '').toLowerCase();
}

/** Checks, before anything is sent, that the server's chain ends in the CA the join token names. */
function checkJoinServer(socket: TLSSocket, caFingerprint: string): { caPem: string } {
  const leaf = socket.getPeerCertificate(true) as DetailedPeerCertificate;
  const issuer = leaf?.issuerCertificate;
  if (!leaf?.raw || !issuer?.raw) throw new AcpError('ACP_ERR_PKI_FINGERPRINT_MISMATCH', 'the server sent no CA certificate; it is not an ACP agent');
  const ca = new X509Certificate(issuer.raw);
  if (normalizeFingerprint(ca.fingerprint256) !== normalizeFingerprint(caFingerprint)) {
    throw new AcpError(
      'ACP_ERR_PKI_FINGERPRINT_MISMATCH',
      "the server's CA is not the one the join token names: possibly a man in the middle; nothing was sent. Check the address and the token",
    );
  }
  if (!new X509Certificate(leaf.raw).verify(ca.publicKey)) {
    throw new AcpError('ACP_ERR_PKI_FINGERPRINT_MISMATCH', "the server's certificate is not signed by the CA the join token names; nothing was sent");
  }
  return { caPem: ca.toString() };
}

/** Dials an agent over TLS 1.3 and speaks frames on the connection once it is verified. */
export function dialTls(options: DialOptions, accept: (connection: FrameConnection) => FrameHandler): Promise<{ connection: FrameConnection; caPem?: string; socket: TLSSocket }> {
  return new Promise((resolve, reject) => {
    const joining = options.material === undefined;
    const socket = tlsConnect({
      host: options.host,
      port: options.port,
      minVersion: 'TLSv1.3',
      ...(options.material ? { key: options.material.key, cert: options.material.cert, ca: [options.material.ca] } : {}),
      rejectUnauthorized: !joining,
      servername: undefined,
      checkServerIdentity: (_host, certificate) => {
        const name = firstName(certificate.subject?.CN);
        if (options.expectNode !== undefined && name !== options.expectNode) {
          return new Error(`reached '${name}' where node '${options.expectNode}' was expected`);
        }
        return undefined;
      },
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new AcpError('ACP_ERR_NODE_UNREACHABLE', `no TLS answer from ${options.host}:${options.port} within ${options.timeoutMs ?? 5000} ms`));
    }, options.timeoutMs ?? 5000);
    socket.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new AcpError('ACP_ERR_NODE_UNREACHABLE', `cannot reach the agent at ${options.host}:${options.port}: ${error.code ?? error.message}`));
    });
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      let caPem: string | undefined;
      try {
        if (joining) caPem = checkJoinServer(socket, options.caFingerprint ?? '').caPem;
      } catch (error) {
        socket.destroy();
        reject(error);
        return;
      }
      socket.removeAllListeners('error');
      socket.setNoDelay(true);
      const connection = attachFrames(socket, `d-${options.host}:${options.port}`, options, accept);
      if (!connection) {
        reject(new AcpError('ACP_ERR_INTERNAL', 'the connection handler failed'));
        return;
      }
      resolve({ connection, socket, ...(caPem ? { caPem } : {}) });
    });
  });
}

/** Parses `HOST:PORT` (or `[v6]:PORT`); the error says what is expected. */
export function parseHostPort(text: string, what: string): { host: string; port: number } {
  const match = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(text) ?? /^([^\s:[\]]+):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[2]) : Number.NaN;
  if (!match || port < 0 || port > 65535) {
    throw new AcpError('ACP_ERR_CLI_USAGE', `${what} must be HOST:PORT (for example 127.0.0.1:7480), not '${text}'`);
  }
  return { host: match[1]!, port };
}
