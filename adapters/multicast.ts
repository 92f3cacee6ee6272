import { createHash, createHmac, randomInt, timingSafeEqual } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { isIP } from 'node:net';
import { decode, encode } from 'cbor-x';
import { z } from 'zod';
import { AcpError, errorMessage } from '../runtime/errors.js';
import type { Logger } from '../runtime/logger.js';
import { nameSchema } from '../runtime/path.js';
import { parseHostPort } from './tls.js';

/**
 * The cluster's authenticated multicast channel (groundwork for CDB sync). A datagram is
 * `ACP1` | HMAC-SHA256(cluster key, body) | body, where the body is CBOR
 * `{ o: origin, i: incarnation, s: sequence, p: payload }`. Forged datagrams (bad HMAC),
 * replays (a sequence already seen from that origin and incarnation, or older than the replay
 * window) and garbage are dropped and counted; nothing a datagram holds can crash the node.
 */
const MAGIC = Buffer.from('ACP1');
const MAC_BYTES = 32;
const HEADER_BYTES = MAGIC.length + MAC_BYTES;
/** Fits a 1500-byte Ethernet MTU with the IP and UDP headers. */
export const MAX_DATAGRAM_BYTES = 1400;
const REPLAY_WINDOW = 4096;
/**
 * The socket's receive buffer. The kernel's default (about 208 KiB) holds some 160 datagrams: a
 * write burst (12,000 records a second from one node in bench/sync) overflowed it whenever the
 * event loop was busy for a few milliseconds, and 60% of the batches were lost and had to be
 * repaired or pulled by snapshot. The kernel caps this at net.core.rmem_max (4 MiB on the build
 * machine, 208 KiB on a stock kernel): a smaller grant is logged once, with the sysctl that raises it.
 */
const RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024;

const bodySchema = z.object({ o: nameSchema, i: z.number().int().min(0), s: z.number().int().min(1), p: z.unknown() });

export interface MulticastStats {
  sent: number;
  accepted: number;
  forged: number;
  replayed: number;
  garbage: number;
  droppedByFault: number;
}

export interface MulticastOptions {
  group: string;
  port: number;
  /** The local interface address to join and send on (e.g. 127.0.0.1, or a namespace's address). */
  interface: string;
  /** The cluster key (hex), shared by every node; authenticates every datagram. */
  clusterKey: string;
  origin: string;
  incarnation: number;
  log: Logger;
  onPayload(payload: unknown, from: { origin: string; incarnation: number; seq: number; bytes: number }): void;
}

interface OriginWindow {
  incarnation: number;
  highest: number;
  seen: Set<number>;
}

export class MulticastChannel {
  readonly stats: MulticastStats = { sent: 0, accepted: 0, forged: 0, replayed: 0, garbage: 0, droppedByFault: 0 };
  private socket: Socket | undefined;
  private seq = 0;
  private dropRate = 0;
  private partitioned = false;
  private key: Buffer;
  private readonly windows = new Map<string, OriginWindow>();

  constructor(private readonly options: MulticastOptions) {
    this.key = MulticastChannel.keyOf(options.clusterKey);
  }
  private static keyOf(clusterKey: string): Buffer {
    const key = Buffer.from(clusterKey, 'hex');
    if (key.length < 16) throw new AcpError('ACP_ERR_CONFIG_INVALID', 'the cluster key is too short to authenticate multicast (need at least 16 bytes, hex)');
    return key;
  }

  /** A rotated cluster key (acp cluster rotate-keys): datagrams signed with the old one are dropped from now on. */
  setKey(clusterKey: string): void {
    this.key = MulticastChannel.keyOf(clusterKey);
  }

  async open(): Promise<void> {
    const { group, port, log } = this.options;
    const socket = createSocket({ type: 'udp4', reuseAddr: true, recvBufferSize: RECEIVE_BUFFER_BYTES });
    socket.on('message', (datagram) => this.receive(datagram));
    socket.on('error', (error) => log.warn({ err: errorMessage(error) }, 'multicast socket error'));
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(port, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    // Linux reports twice what it grants (the other half is its own bookkeeping).
    const granted = socket.getRecvBufferSize() / 2;
    if (granted < RECEIVE_BUFFER_BYTES) {
      log.warn(
        { grantedBytes: granted, wantedBytes: RECEIVE_BUFFER_BYTES },
        `the multicast receive buffer is ${Math.round(granted / 1024)} KiB, not ${RECEIVE_BUFFER_BYTES / 1024} KiB: net.core.rmem_max caps it, and a burst of writes from other nodes may overflow it (the losses are repaired, more slowly); raise it with sysctl -w net.core.rmem_max=${RECEIVE_BUFFER_BYTES}`,
      );
    }
    try {
      socket.addMembership(group, this.options.interface);
      socket.setMulticastInterface(this.options.interface);
      socket.setMulticastLoopback(true);
      socket.setMulticastTTL(1);
    } catch (error) {
      socket.close();
      throw new AcpError('ACP_ERR_CONFIG_INVALID', `cannot join multicast group ${group} on ${this.options.interface}: ${errorMessage(error)}; use --multicast-if, or --peers for unicast`);
    }
    this.socket = socket;
  }

  /** A fault-injection knob (daemons started with --faults): drop this share of outgoing datagrams. */
  setDropRate(rate: number): void {
    this.dropRate = Math.min(1, Math.max(0, rate));
  }

  /** A fault-injection knob: while partitioned, nothing is sent and everything received is dropped. */
  setPartitioned(on: boolean): void {
    this.partitioned = on;
  }

  /** Sends one payload; the caller chunks so that each fits one datagram. Resolves with the datagram's size in bytes. */
  send(payload: unknown): Promise<number> {
    const socket = this.socket;
    if (!socket) return Promise.reject(new AcpError('ACP_ERR_NODE_UNREACHABLE', 'the multicast channel is not open'));
    this.seq += 1;
    const body = Buffer.from(encode({ o: this.options.origin, i: this.options.incarnation, s: this.seq, p: payload }));
    if (HEADER_BYTES + body.length > MAX_DATAGRAM_BYTES) {
      this.seq -= 1;
      return Promise.reject(new AcpError('ACP_ERR_WIRE_FRAME_TOO_LARGE', `a ${HEADER_BYTES + body.length}-byte datagram exceeds ${MAX_DATAGRAM_BYTES} bytes; send fewer changes per datagram`));
    }
    if (this.partitioned || (this.dropRate > 0 && randomInt(1_000_000) < this.dropRate * 1_000_000)) {
      this.stats.droppedByFault += 1;
      return Promise.resolve(0);
    }
    const datagram = Buffer.concat([MAGIC, this.mac(body), body]);
    this.stats.sent += 1;
    return new Promise((resolve, reject) => {
      socket.send(datagram, this.options.port, this.options.group, (error) => (error ? reject(new AcpError('ACP_ERR_NODE_UNREACHABLE', `multicast send failed: ${error.message}`)) : resolve(datagram.length)));
    });
  }

  async close(): Promise<void> {
    const socket = this.socket;
    this.socket = undefined;
    if (socket) await new Promise<void>((resolve) => socket.close(() => resolve()));
  }

  /** @internal Exposed for tests: handles one datagram as received. */
  receive(datagram: Buffer): void {
    if (this.partitioned) {
      this.stats.droppedByFault += 1;
      return;
    }
    if (datagram.length <= HEADER_BYTES || !datagram.subarray(0, MAGIC.length).equals(MAGIC)) {
      this.stats.garbage += 1;
      return;
    }
    const mac = datagram.subarray(MAGIC.length, HEADER_BYTES);
    const body = datagram.subarray(HEADER_BYTES);
    if (!timingSafeEqual(mac, this.mac(body))) {
      this.stats.forged += 1;
      return;
    }
    let parsed: z.infer<typeof bodySchema>;
    try {
      const result = bodySchema.safeParse(decode(body));
      if (!result.success) throw new Error('not an ACP datagram body');
      parsed = result.data;
    } catch {
      this.stats.garbage += 1;
      return;
    }
    if (parsed.o === this.options.origin) return; // our own, looped back
    if (!this.fresh(parsed.o, parsed.i, parsed.s)) {
      this.stats.replayed += 1;
      return;
    }
    this.stats.accepted += 1;
    try {
      this.options.onPayload(parsed.p, { origin: parsed.o, incarnation: parsed.i, seq: parsed.s, bytes: datagram.length });
    } catch (error) {
      this.options.log.warn({ origin: parsed.o, err: errorMessage(error) }, 'multicast payload handler failed');
    }
  }

  private mac(body: Buffer): Buffer {
    return createHmac('sha256', this.key).update(body).digest();
  }

  /** A sequence not seen before from this origin's current incarnation (sliding window). */
  private fresh(origin: string, incarnation: number, seq: number): boolean {
    let window = this.windows.get(origin);
    if (window && incarnation < window.incarnation) return false;
    if (!window || incarnation > window.incarnation) {
      window = { incarnation, highest: 0, seen: new Set() };
      this.windows.set(origin, window);
    }
    if (seq <= window.highest - REPLAY_WINDOW || window.seen.has(seq)) return false;
    window.seen.add(seq);
    if (seq > window.highest) {
      window.highest = seq;
      for (const old of window.seen) if (old <= seq - REPLAY_WINDOW) window.seen.delete(old);
    }
    return true;
  }
}

export const DEFAULT_MULTICAST_PORT = 5460;

/** The cluster's default group: one per cluster name, in the organisation-local scope. */
export function defaultGroup(cluster: string): string {
  const hash = createHash('sha256').update(cluster).digest();
  return `239.192.${hash[0]!}.${hash[1]! === 0 ? 1 : hash[1]!}`;
}

/** `GROUP:PORT` with an IPv4 multicast group; the error says what is expected. */
export function parseMulticast(text: string): { group: string; port: number } {
  const { host, port } = parseHostPort(text, '--multicast');
  const first = Number(host.split('.')[0]);
  if (isIP(host) !== 4 || first < 224 || first > 239 || port === 0) {
    throw new AcpError('ACP_ERR_CLI_USAGE', `--multicast must be an IPv4 multicast group and a port, 224.0.0.0-239.255.255.255 (for example 239.192.10.1:5460), not '${text}'`);
  }
  return { group: host, port };
}

/** A dotted IPv4 address other than 0.0.0.0 (an interface to join a group on). */
export function isIPv4Unicast(host: string): boolean {
  return isIP(host) === 4 && host !== '0.0.0.0';
}
