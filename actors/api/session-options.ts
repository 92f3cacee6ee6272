/** What an API session (session.ts) is given: its limits, its checks and its callbacks. */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { CborLimits } from '../../runtime/cbor-guard.js';
import type { HelloBody, Envelope } from '../../runtime/codec.js';
import type { ErrorCode } from '../../runtime/errors.js';
import type { Logger } from '../../runtime/logger.js';
import type { Principal } from '../../runtime/principal.js';
import type { GatewaySystem } from '../../runtime/services.js';
import type { TokenBook } from '../../runtime/tokens.js';

export const DEFAULT_CLIENT_ASK_TIMEOUT_MS = 30_000;

/** Per-connection bounds, so one client cannot hold unbounded state in the daemon. */
export interface SessionLimits {
  maxWatches: number;
  maxAsksInFlight: number;
}

export const DEFAULT_SESSION_LIMITS: SessionLimits = { maxWatches: 256, maxAsksInFlight: 4096 };

export interface SessionOptions {
  system: GatewaySystem;
  apiKey: string;
  /** The cluster's API tokens; without it, a hello with a token is refused. */
  tokens?: TokenBook;
  limits?: SessionLimits;
  helloTimeoutMs: number;
  log: Logger;
  /** Counts refusals, for `acp status`. */
  onRefused?(code: ErrorCode): void;
  /**
   * Checks a hello beyond the key or token and the cluster (the agent checks the certificate's node
   * name) and returns the connection's principal, given the one the key or token proved; throws an
   * AcpError to refuse.
   */
  authenticate?(hello: HelloBody & Record<string, unknown>, proven: Principal): Principal;
  /**
   * A peer connection carries our own requests too: reply, error, event and pong frames go here
   * instead of being refused.
   */
  peer?: { frame(envelope: Envelope): void };
  /**
   * Takes `tells` frames (a peer node's run of tells to one actor in one frame) from a peer node
   * (a `node` principal) alone, at most `maxBytes` of messages a frame, checked with these limits
   * together; the hello answer offers them to a peer. Absent, or another principal: refused.
   */
  tells?: { maxBytes: number; limits: CborLimits };
  /** The hello already happened (a connection we dialed). */
  greeted?: boolean;
  /**
   * Who the connection speaks for, when known before the hello (a peer we dialed). Otherwise the
   * hello decides: the API key is `operator`, a token is `token:<id>` with its role, and the agent
   * makes a peer `node:<name>`. A peer's requests that name their own sender are relayed for it.
   */
  principal?: Principal;
  /** Checked on every request of a connection authenticated outside the hello (a web session): throws when it ended. */
  stillValid?(): unknown;
  /** Called once the hello answer has been sent: only then may this side send frames of its own. */
  onGreeted?(hello: HelloBody & Record<string, unknown>): void;
}

/** Compares secrets in constant time (hashing first makes the lengths equal). */
export function keysMatch(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}
