import { sendingThrough, type FrameConnection } from '../../adapters/frame-listener.js';
import type { Envelope } from '../../runtime/codec.js';

/**
 * A partition injected by `acp chaos` (daemon with --faults): while it is on, the agent carries no
 * traffic between this node and its peers, in either direction, as if its cable were pulled.
 * Frames on peer connections are dropped both ways (the peers' heartbeats then give the
 * connections up, as they would on a dead link), this node dials no peer, and a peer's hello is
 * left unanswered. Connections of scripts and operators (`acp` over TLS, role `client`) are not
 * cluster traffic and keep working: that is how a chaos run reaches a partitioned node to heal it.
 */
export class PartitionGate {
  private on = false;

  get partitioned(): boolean {
    return this.on;
  }

  set(on: boolean): void {
    this.on = on;
  }

  /** Whether an inbound frame must be dropped: on a peer connection, or a peer's hello. */
  dropsInbound(isPeer: boolean, envelope: Envelope): boolean {
    if (!this.on) return false;
    if (isPeer) return true;
    return envelope.k === 'hello' && (envelope.body as { role?: unknown } | undefined)?.role === 'peer';
  }

  /** The connection as the link and session see it: on a peer connection, sends vanish while partitioned. */
  wrap(connection: FrameConnection, isPeer: () => boolean): FrameConnection {
    return sendingThrough(connection, (envelope) => {
      if (this.on && isPeer()) return;
      connection.send(envelope);
    });
  }
}
