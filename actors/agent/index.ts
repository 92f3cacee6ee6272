/*
 * Over 400 lines, knowingly: dialing, accepting, lookups and renewal share the address book, the
 * peer links and the TLS material kept here; the messages (schema.ts), joins (join.ts) and
 * identification of an address (identify.ts) live beside it.
 */
import type { FrameConnection, FrameHandler } from '../../adapters/frame-listener.js';
import { readSecretFile, secretExists } from '../../adapters/home.js';
import { createCsr, fingerprint, certificateExpiry, signCsr, writeSecret } from '../../adapters/pki.js';
import { encodeToken, mintToken, TokenLedger } from '../../adapters/join-tokens.js';
import { dialTls, parseHostPort, TlsFrameListener, type TlsMaterial, type TlsPeer } from '../../adapters/tls.js';
import type { ActorContext, Actor, ServiceDefinition } from '../../runtime/actor.js';
import { offeredTells, PROTOCOL_VERSION, TELLS_MAX_BYTES, type Envelope } from '../../runtime/codec.js';
import { wireLimits } from '../../runtime/config.js';
import { AcpError, errorMessage } from '../../runtime/errors.js';
import type { Message } from '../../runtime/messages.js';
import { formatPath, isValidName, parsePath } from '../../runtime/path.js';
import type { Principal } from '../../runtime/principal.js';
import type { ServiceDeps } from '../../runtime/services.js';
import type { RemoteRouter } from '../../runtime/system.js';
import { ApiSession } from '../api/session.js';
import { ServiceCounters } from '../kit.js';
import { realClock, type Clock } from '../../runtime/clock.js';
import { CdbFeed } from '../cdb-feed.js';
import { upsertNodeObject } from '../node-object.js';
import { identifyAgent } from './identify.js';
import { joinSession, type JoinEnv } from './join.js';
import { behindPackedTells, PeerLink } from './link.js';
import { Membership } from './membership.js';
import { PartitionGate } from './partition.js';
import { agentAuthority, agentSchema, type PeerInfo } from './schema.js';

export { agentAuthority, agentSchema, type AgentMessage, type PeerInfo } from './schema.js';
import { REVOCATION_PREFIX, Revocations } from './revocations.js';

const LOOKUP_MISS_MS = 5000;

function revokedError(node: string | undefined): AcpError {
  return new AcpError('ACP_ERR_AGENT_BAD_CERT', `the certificate of '${node ?? '?'}' was revoked: the node was removed from the cluster (acp node rm); to bring it back, join it again with a new token`);
}

function partitionedError(): AcpError {
  return new AcpError('ACP_ERR_NODE_UNREACHABLE', 'this node is cut off from its peers by an injected partition (acp chaos); heal it to reconnect');
}

function refusal(connection: FrameConnection, error: AcpError): FrameHandler {
  connection.close({ v: PROTOCOL_VERSION, k: 'error', err: error.toData() });
  return { frame: () => undefined, badFrame: () => undefined, closed: () => undefined };
}

/**
 * The agent: this node's TLS 1.3 door to the others. It carries tell, ask and watch for actors on
 * other nodes (installed as the actor system's remote router), accepts peers and scripts with a
 * certificate from the cluster CA, and, on the node that holds the CA key, signs certificates for
 * joining nodes (one-time tokens) and renewals.
 */
export function createAgent(ctx: ActorContext, deps: ServiceDeps): Actor {
  const { gateway: system, config, paths } = deps;
  const self = ctx.node.node;
  const cluster = ctx.node.cluster;
  const info = new ServiceCounters();
  // The hello deadline and the lookup cache, like the links' heartbeats, on the runtime Clock.
  const clock: Clock = realClock;
  const links = new Map<string, PeerLink>();
  /** Nodes nobody knew an address for, and when: not asked about again for a while. */
  const misses = new Map<string, number>();
  const addresses = new Map<string, string>();
  const revocations = new Revocations();
  const gate = new PartitionGate();
  let material: TlsMaterial | undefined;
  let listener: TlsFrameListener | undefined;
  const selfAddress = config.agent.listen;
  const holdsCa = () => secretExists(paths.caKey);
  const ledger = new TokenLedger(paths.tokens);
  const cdb = ctx.ref(ctx.self.path.replace(/\/agent$/, '/cdb'));

  const loadMaterial = (): TlsMaterial | undefined => {
    if (!secretExists(paths.nodeKey) || !secretExists(paths.nodeCert) || !secretExists(paths.caCert)) return undefined;
    return { key: readSecretFile(paths.nodeKey), cert: readSecretFile(paths.nodeCert), ca: readSecretFile(paths.caCert) };
  };

  const remember = (node: string, address: string | undefined, witness?: true) => {
    if (!address || node === self || addresses.get(node) === address) return;
    addresses.set(node, address);
    // Only the address (and, at a join, that it is a witness): the node's other fields are not ours to drop.
    upsertNodeObject(cdb, node, { cluster, agent: address, ...(witness ? { witness } : {}) }).catch((error: unknown) => {
      ctx.log.warn({ peer: node, err: errorMessage(error) }, 'could not record the peer in the cdb');
    });
  };

  const link = (node: string): PeerLink => {
    let existing = links.get(node);
    if (!existing) {
      existing = new PeerLink(node, {
        log: ctx.log,
        heartbeatMs: config.agent.heartbeatMs,
        maxQueuedFrames: config.agent.maxQueuedFrames,
        dial: (target) => dial(target),
        deadLetter: (envelope, why) => {
          try {
            system.deadLetter(parsePath(String(envelope.to)), { message: envelope.body as Message, sender: system.daemonPrincipal(), external: false }, 'node-unreachable', why);
          } catch {
            ctx.log.warn({ peer: node, reason: why }, 'dead letter to a peer');
          }
        },
      });
      links.set(node, existing);
    }
    return existing;
  };

  // Peers may pack runs of tells into one frame, up to a quarter of a frame's limit (at most 256 KiB;
  // none below 8 KiB, too small to hold a run), its messages held to the frame's limits together.
  const wire = wireLimits(config);
  const tellsBytes = Math.min(TELLS_MAX_BYTES, Math.floor(wire.maxFrameBytes / 4));
  const tells = tellsBytes >= 8192 ? { maxBytes: tellsBytes, limits: { maxDepth: wire.maxDepth, maxItems: wire.maxItems } } : undefined;

  const serving = (connection: FrameConnection, principal: Principal, target?: PeerLink) =>
    new ApiSession(connection, {
      system,
      apiKey: deps.apiKey,
      helloTimeoutMs: config.api.helloTimeoutMs,
      limits: { maxWatches: config.api.maxWatches, maxAsksInFlight: config.api.maxAsksInFlight },
      log: ctx.log,
      principal,
      greeted: true,
      ...(tells ? { tells } : {}),
      ...(target ? { peer: { frame: (envelope: Envelope) => target.frame(envelope) } } : {}),
    });

  /** Dials a peer, says hello, and attaches the connection to its link once the peer answers. */
  const dial = async (target: PeerLink): Promise<void> => {
    if (!material) throw new AcpError('ACP_ERR_AGENT_NO_PKI', 'this node has no cluster certificate; run acp init or acp join');
    if (revocations.isRemoved(target.node)) throw new AcpError('ACP_ERR_NODE_UNREACHABLE', `node '${target.node}' was removed from the cluster (acp node rm)`);
    if (gate.partitioned) throw partitionedError();
    const address = addresses.get(target.node) ?? (await lookup(target.node));
    if (!address) {
      // A name nobody knows keeps no link (names come from the network: the map must stay bounded).
      if (!target.hasWatches && links.get(target.node) === target) links.delete(target.node);
      throw new AcpError('ACP_ERR_NODE_UNREACHABLE', `no agent address is known for node '${target.node}', here or at the nodes this one knows`);
    }
    const { host, port } = parseHostPort(address, `the agent address of ${target.node}`);
    let answered: (incarnation: number) => void = () => undefined;
    let failed: (error: AcpError) => void = () => undefined;
    let given = false;
    const hello = new Promise<number>((resolve, reject) => {
      answered = resolve;
      failed = (error) => {
        given = true;
        reject(error);
      };
    });
    const { connection } = await dialTls({ host, port, material, expectNode: target.node, log: ctx.log, maxFrameBytes: config.api.maxFrameBytes, maxDepth: config.api.maxFrameDepth, maxItems: config.api.maxFrameItems }, (conn) => {
      let session: ApiSession | undefined;
      // A connection we dialed is always to a peer: a partition drops its frames both ways.
      const gated = gate.wrap(conn, () => true);
      return {
        frame(envelope) {
          if (gate.dropsInbound(true, envelope)) return;
          target.seen();
          if (session) {
            session.frame(envelope);
            return;
          }
          if (given) return; // the dial already failed (timed out): a late hello attaches nothing
          if (envelope.k === 'error') {
            failed(AcpError.fromData(envelope.err ?? { code: 'ACP_ERR_INTERNAL', kind: 'internal', message: 'refused' }));
            conn.close();
            return;
          }
          const body = envelope.body as { node?: string; cluster?: string; incarnation?: number } | undefined;
          if (envelope.k !== 'hello' || body?.node !== target.node || body.cluster !== cluster || typeof body.incarnation !== 'number') {
            failed(new AcpError('ACP_ERR_WIRE_BAD_HELLO', `'${target.node}' did not answer as node '${target.node}' of cluster '${cluster}'; check its agent address (acp peers)`));
            conn.close();
            return;
          }
          session = serving(behindPackedTells(gated, () => target), { kind: 'node', node: target.node }, target);
          target.attach(gated, body.incarnation, offeredTells(body));
          answered(body.incarnation);
        },
        badFrame(error) {
          session?.badFrame(error);
          failed(error);
        },
        closed() {
          session?.closed();
          target.detach(gated, 'closed');
          failed(new AcpError('ACP_ERR_WIRE_CLOSED', `'${target.node}' closed the connection`));
        },
      };
    });
    connection.send({
      v: PROTOCOL_VERSION,
      k: 'hello',
      body: { cluster, node: self, incarnation: ctx.node.incarnation, apiKey: deps.apiKey, proto: PROTOCOL_VERSION, role: 'peer', ...(selfAddress ? { agent: selfAddress } : {}), ...(tells ? { tells: { maxBytes: tells.maxBytes } } : {}) },
    });
    const cancel = clock.setTimer(config.api.helloTimeoutMs, () => {
      failed(new AcpError('ACP_ERR_NODE_UNREACHABLE', `'${target.node}' did not answer the hello within ${config.api.helloTimeoutMs} ms`));
      connection.close();
    });
    try {
      await hello;
    } finally {
      cancel();
    }
  };

  /**
   * A node this one has not met (it joined through another): its object in the CDB, or else ask
   * the nodes we know, the CA node first, whether they know where its agent listens.
   */
  const lookup = async (node: string): Promise<string | undefined> => {
    // First this node's own CDB: every node's object (object/node/<name>, with its agent address)
    // reaches every node, so a node that joined after this agent started is found here even when
    // the CA node, which this agent would ask next, is the one that is down.
    const recorded = await cdb
      .ask<Message & { record: { value: { agent?: unknown } | null } }>({ type: 'cdb.get', key: `object/node/${node}` }, { timeoutMs: 2000 })
      .then((reply) => (typeof reply.record.value?.agent === 'string' ? reply.record.value.agent : undefined), () => undefined);
    if (recorded !== undefined && node !== self) {
      addresses.set(node, recorded);
      return recorded;
    }
    const missedAt = misses.get(node);
    if (missedAt !== undefined && clock.now() - missedAt < LOOKUP_MISS_MS) return undefined;
    const known = [...addresses.keys()].filter((peer) => peer !== node);
    const caNode = config.agent.caNode;
    const order = caNode && known.includes(caNode) ? [caNode, ...known.filter((peer) => peer !== caNode)] : known;
    for (const peer of order) {
      try {
        const reply = await ctx.ref(`acp://${cluster}/${peer}/agent`).ask<Message & { address: string | null }>({ type: 'agent.lookup', node }, { timeoutMs: 3000 });
        if (reply.address) {
          remember(node, reply.address);
          return reply.address;
        }
      } catch (error) {
        ctx.log.debug({ peer, node, err: errorMessage(error) }, 'address lookup failed');
      }
    }
    // Bounded: names come from the network.
    if (misses.size >= 1000) misses.clear();
    misses.set(node, clock.now());
    return undefined;
  };

  /** An inbound TLS connection: a peer, a script, or (no certificate, CA node only) a joining node. */
  const accept = (connection: FrameConnection, peer: TlsPeer): FrameHandler => {
    if (!peer.hasCertificate) {
      if (holdsCa()) return joinSession(connection, peer, joinEnv);
      ctx.log.warn({ remote: peer.remoteAddress }, 'agent connection refused: no client certificate');
      deps.countRefusal();
      const joinHint = config.agent.caNode && config.agent.caNode !== self ? `; to join, use the node holding the CA (${config.agent.caNode})` : '';
      return refusal(connection, new AcpError('ACP_ERR_AGENT_BAD_CERT', `a client certificate from the cluster CA is required${joinHint}`));
    }
    if (!peer.authorized) {
      ctx.log.warn({ remote: peer.remoteAddress, reason: peer.authorizationError }, 'agent connection refused: certificate not accepted');
      deps.countRefusal();
      return refusal(connection, new AcpError('ACP_ERR_AGENT_BAD_CERT', `certificate refused (${peer.authorizationError}): it must be issued by this cluster's CA and be valid now`));
    }
    if (revocations.isRevoked(peer.commonName, peer.validFromMs)) {
      ctx.log.warn({ remote: peer.remoteAddress, node: peer.commonName }, 'agent connection refused: the certificate was revoked');
      deps.countRefusal();
      return refusal(connection, revokedError(peer.commonName));
    }
    let target: PeerLink | undefined;
    const gated = gate.wrap(connection, () => target !== undefined);
    const session = new ApiSession(behindPackedTells(gated, () => target), {
      system,
      apiKey: deps.apiKey,
      helloTimeoutMs: config.api.helloTimeoutMs,
      log: ctx.log,
      tokens: deps.tokens,
      limits: { maxWatches: config.api.maxWatches, maxAsksInFlight: config.api.maxAsksInFlight },
      onRefused: () => deps.countRefusal(),
      ...(tells ? { tells } : {}),
      // Nothing is trusted before the hello: a script's requests must never pass for a node's.
      authenticate: (hello, proven) => {
        if (hello.node !== peer.commonName) {
          throw new AcpError('ACP_ERR_AGENT_NODE_MISMATCH', `the certificate is for '${peer.commonName}' but the hello says '${String(hello.node)}'`);
        }
        if (revocations.isRevoked(peer.commonName, peer.validFromMs)) throw revokedError(peer.commonName);
        if (hello.role !== 'peer') return proven.kind === 'operator' || proven.kind === 'token' ? { ...proven, via: 'agent' } : proven;
        if (proven.kind !== 'operator') throw new AcpError('ACP_ERR_WIRE_BAD_KEY', 'a peer node says hello with the cluster key, not a token');
        const node = peer.commonName;
        if (!node || !isValidName(node)) throw new AcpError('ACP_ERR_NAME_INVALID', `the certificate names ${JSON.stringify(node)}, not a valid node name`);
        return { kind: 'node', node };
      },
      // Our own frames go out only after the hello answer, or the dialer would take them for it.
      onGreeted: (hello) => {
        if (hello.role === 'peer' && typeof hello.node === 'string' && typeof hello.incarnation === 'number') {
          remember(hello.node, typeof hello.agent === 'string' ? hello.agent : undefined);
          target = link(hello.node);
          target.attach(gated, hello.incarnation, offeredTells(hello));
        }
      },
      peer: { frame: (envelope) => target?.frame(envelope) },
    });
    return {
      frame: (envelope) => {
        if (gate.dropsInbound(target !== undefined, envelope)) return;
        target?.seen();
        session.frame(envelope);
      },
      badFrame: (error) => session.badFrame(error),
      closed: () => {
        session.closed();
        target?.detach(gated, 'closed');
      },
    };
  };

  const joinEnv: JoinEnv = {
    cluster,
    self,
    selfAddress,
    paths,
    ledger,
    helloTimeoutMs: config.api.helloTimeoutMs,
    log: ctx.log,
    apiKey: () => deps.apiKey,
    countRefusal: () => deps.countRefusal(),
    knows: (node) => addresses.has(node),
    peers: () => [...addresses.entries()].map(([node, agent]) => ({ node, agent })),
    remember,
  };

  /** Which node's agent answers at an address (a known one is answered from memory). */
  const identify = async (address: string): Promise<string> => {
    for (const [node, known] of addresses) if (known === address) return node;
    if (!material) throw new AcpError('ACP_ERR_AGENT_NO_PKI', 'this node has no cluster certificate; run acp init or acp join');
    if (gate.partitioned) throw partitionedError();
    const node = await identifyAgent(address, { cluster, self, incarnation: ctx.node.incarnation, apiKey: deps.apiKey, material, log: ctx.log, maxFrameBytes: config.api.maxFrameBytes, timeoutMs: config.api.helloTimeoutMs });
    remember(node, address);
    return node;
  };

  const router: RemoteRouter = {
    deliver: (node, path, delivery, timeoutMs) => link(node).deliver(path, delivery, timeoutMs),
    watch: (node, path, listener) => {
      if (addresses.has(node) || links.has(node)) return link(node).watch(path, listener);
      // A name nobody knows gets its answer now, not a link that retries for ever.
      let cancel = () => {
        cancelled = true;
      };
      let cancelled = false;
      void lookup(node).then(
        (address) => {
          if (cancelled) return;
          if (address) {
            cancel = link(node).watch(path, listener);
            return;
          }
          listener({ type: 'terminated', path: formatPath(path), reason: `no-such-node: the cluster knows no node named '${node}'` });
        },
        () => undefined,
      );
      return () => cancel();
    },
  };

  /** A removed node: no link, no address, no connection. */
  const drop = (node: string) => {
    links.get(node)?.close();
    links.delete(node);
    addresses.delete(node);
  };
  const membership = new Membership({
    ctx,
    revocations,
    peers: () => [...new Set([...addresses.keys(), ...links.keys()])].filter((node) => node !== self && !revocations.isRemoved(node)).sort(),
    drop,
    installKeys: (keys) => deps.installKeys(keys),
  });
  const revoked = (records: readonly { key: string; value: unknown; deleted?: true }[]) => {
    for (const node of revocations.apply(records)) {
      ctx.log.warn({ node }, 'node removed from the cluster: its links are closed and its certificate refused');
      drop(node);
    }
  };

  /** The cluster's removed nodes, from the CDB: a snapshot, then every change. */
  const revocationFeed = new CdbFeed(ctx, REVOCATION_PREFIX, revoked);

  const renew = async (): Promise<Message> => {
    if (!material) throw new AcpError('ACP_ERR_AGENT_NO_PKI', 'this node has no cluster certificate to renew; run acp init or acp join');
    const { csrPem, keyPem } = await createCsr(self);
    let cert: string;
    if (holdsCa()) {
      cert = signCsr({ csrPem, caCertPem: readSecretFile(paths.caCert), caKeyPem: readSecretFile(paths.caKey), node: self });
    } else {
      const caNode = config.agent.caNode;
      if (!caNode) throw new AcpError('ACP_ERR_AGENT_NO_PKI', "this node does not know which node holds the CA (agent.caNode in config.json)");
      const reply = await ctx.ref(`acp://${cluster}/${caNode}/agent`).ask<Message & { cert: string }>({ type: 'agent.sign', csr: csrPem }, { timeoutMs: 15_000 });
      cert = reply.cert;
    }
    writeSecret(paths.nodeKey, keyPem);
    writeSecret(paths.nodeCert, cert);
    material = { key: keyPem, cert, ca: material.ca };
    deps.setNodeFact('certNotAfter', certificateExpiry(cert).toISOString());
    listener?.setMaterial(material);
    ctx.log.info({ notAfter: certificateExpiry(cert).toISOString() }, 'certificate renewed');
    return { type: 'agent.renewed', node: self, notAfter: certificateExpiry(cert).toISOString(), fingerprint: fingerprint(cert) };
  };

  return {
    async started() {
      material = loadMaterial();
      // Carried in the node's meta (meta/node/<n>): the monitor's certificate-expiring rule reads it.
      if (material) deps.setNodeFact('certNotAfter', certificateExpiry(material.cert).toISOString());
      try {
        const known = await cdb.ask<Message & { records: { value: { name?: string; agent?: string } }[] }>({ type: 'cdb.list', prefix: 'object/node/' }, { timeoutMs: 5000 });
        for (const record of known.records) if (record.value.name && record.value.agent && record.value.name !== self) addresses.set(record.value.name, record.value.agent);
      } catch (error) {
        ctx.log.warn({ err: errorMessage(error) }, 'could not read known peers from the cdb');
      }
      for (const seed of config.agent.seeds) if (!addresses.has(seed.node)) addresses.set(seed.node, seed.agent);
      await revocationFeed.start();
      system.setRemoteRouter(router);
      if (!material) {
        ctx.log.info('no cluster certificate: the agent carries nothing to other nodes (run acp init or acp join)');
        return;
      }
      if (!selfAddress) {
        ctx.log.info('no agent address configured: other nodes cannot connect here (acp up --agent HOST:PORT)');
        return;
      }
      const { host, port } = parseHostPort(selfAddress, 'the agent address');
      listener = new TlsFrameListener({ host, port, material, log: ctx.log, ...wireLimits(config), maxConnections: config.api.maxConnections, handshakeTimeoutMs: config.api.helloTimeoutMs, accept });
      await listener.listen();
      ctx.log.info({ address: selfAddress }, 'agent listening (TLS 1.3, client certificates required)');
    },
    async receive(message, sender) {
      info.handled += 1;
      const fed = revocationFeed.handle(message);
      if (fed !== false) return fed === true ? undefined : fed;
      const parsed = agentSchema.parse(message);
      switch (parsed.type) {
        case 'service.info':
          return { ...info.info('agent', 'TLS agent', ctx), listening: selfAddress ?? null, peers: links.size, partitioned: gate.partitioned };
        case 'agent.peers': {
          const peers: PeerInfo[] = [...new Set([...links.keys(), ...addresses.keys()])].sort().map((node) => {
            const peerLink = links.get(node);
            return {
              node,
              state: peerLink?.state ?? 'idle',
              address: addresses.get(node) ?? null,
              incarnation: peerLink?.incarnation ?? null,
              queued: peerLink?.queued ?? 0,
              inFlight: peerLink?.inFlight ?? 0,
              lastSeenMs: peerLink?.lastSeen ? Date.now() - peerLink.lastSeen : null,
            };
          });
          return { type: 'agent.peers', peers };
        }
        case 'agent.lookup':
          return { type: 'agent.address', node: parsed.node, address: parsed.node === self ? (selfAddress ?? null) : (addresses.get(parsed.node) ?? null) };
        case 'agent.identify':
          return { type: 'agent.identified', address: parsed.address, node: await identify(parsed.address) };
        case 'agent.token': {
          if (!holdsCa() || !material) throw new AcpError('ACP_ERR_AGENT_NO_PKI', `only the node holding the cluster CA (${config.agent.caNode ?? 'the one that ran acp init'}) creates join tokens`);
          const token = mintToken(cluster, fingerprint(material.ca), parsed.ttlMs);
          ledger.add(token);
          return { type: 'agent.token', token: encodeToken(token), expiresAt: new Date(token.expiresAt).toISOString(), agent: selfAddress ?? null };
        }
        case 'agent.sign': {
          if (!holdsCa()) throw new AcpError('ACP_ERR_AGENT_NO_PKI', 'this node does not hold the cluster CA');
          // The authority table let only a peer's agent through: its certificate names the node.
          const node = sender.kind === 'node' ? sender.node : undefined;
          if (!node) throw new AcpError('ACP_ERR_AGENT_BAD_CERT', 'only a node, over its own agent connection, may have its certificate renewed');
          const cert = signCsr({ csrPem: parsed.csr, caCertPem: readSecretFile(paths.caCert), caKeyPem: readSecretFile(paths.caKey), node });
          return { type: 'agent.signed', cert };
        }
        case 'agent.renew':
          return renew();
        case 'agent.remove-node':
          return membership.removeNode(parsed.node, sender);
        case 'agent.rotate-keys':
          return membership.rotateKeys();
        case 'agent.install-keys':
          return membership.install({ clusterKey: parsed.clusterKey, apiKey: parsed.apiKey });
        case 'agent.peer-heard':
          links.get(parsed.node)?.redialNow();
          return undefined;
        case 'agent.partition':
          if (!system.faultsEnabled) throw new AcpError('ACP_ERR_FAULTS_DISABLED', 'fault injection is disabled on this node; restart it with `acp up --faults` to allow chaos commands');
          gate.set(parsed.on);
          ctx.log.warn({ partitioned: parsed.on }, parsed.on ? 'partitioned by a fault: no traffic to or from the peers until healed' : 'partition healed');
          return { type: 'agent.partition', on: parsed.on };
        default: {
          const unreachable: never = parsed;
          return unreachable;
        }
      }
    },
    async stopping() {
      revocationFeed.stop();
      system.setRemoteRouter(undefined);
      for (const peerLink of links.values()) peerLink.close();
      await listener?.close();
    },
  };
}

export const service: ServiceDefinition<ServiceDeps | undefined> = {
  name: 'agent',
  description: 'TLS agent: remote tell, ask and watch between nodes',
  schema: agentSchema,
  authority: agentAuthority,
  isolations: ['inline'],
  create(ctx, deps) {
    if (!deps) throw new Error('agent runs inline only');
    return createAgent(ctx, deps);
  },
};

