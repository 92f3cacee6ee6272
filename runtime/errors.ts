/**
 * The one error catalog. Every error ACP reports carries a stable code `ACP_ERR_<SUBSYSTEM>_<WHAT>`
 * and a message a user can act on. `kind` is the short, typed category that asks reject with.
 * docs/errors.md documents each code; a test keeps the two in step.
 */
export const errorCatalog = {
  ACP_ERR_PATH_INVALID: { kind: 'bad-request', summary: 'An actor path did not parse.' },
  ACP_ERR_NAME_INVALID: { kind: 'bad-request', summary: 'A cluster, node or actor name is not of the form [a-z0-9][a-z0-9._-]{0,62}.' },
  ACP_ERR_ASK_TIMEOUT: { kind: 'timeout', summary: 'No reply arrived within the ask timeout.' },
  ACP_ERR_NO_SUCH_ACTOR: { kind: 'no-such-actor', summary: 'No actor lives at the path (never existed, stopped, or restarting).' },
  ACP_ERR_SCHEMA_REJECTED: { kind: 'rejected-by-schema', summary: 'A message failed its service schema.' },
  ACP_ERR_NODE_UNREACHABLE: { kind: 'node-unreachable', summary: 'The target node cannot be reached from here.' },
  ACP_ERR_ACTOR_CRASHED: { kind: 'actor-crashed', summary: 'The actor crashed before it answered; its supervisor decides what happens next.' },
  ACP_ERR_ACTOR_STOPPED: { kind: 'actor-stopped', summary: 'The actor stopped before it answered.' },
  ACP_ERR_ACTOR_EXISTS: { kind: 'conflict', summary: 'An actor already lives at the path.' },
  ACP_ERR_UNKNOWN_MESSAGE: { kind: 'rejected-by-schema', summary: 'The actor does not handle this message type.' },
  ACP_ERR_FAULTS_DISABLED: { kind: 'forbidden', summary: 'Fault injection was asked for but the daemon runs without --faults.' },
  ACP_ERR_CHAOS_CRASH: { kind: 'actor-crashed', summary: 'A crash injected on purpose by `acp chaos crash`.' },
  ACP_ERR_CHAOS_SCENARIO: { kind: 'bad-request', summary: 'An `acp chaos run` scenario file is not valid (the message names the field or step).' },
  ACP_ERR_WIRE_FRAME_TOO_LARGE: { kind: 'bad-frame', summary: 'A frame announced more bytes than the listener allows (before a good hello: api.maxHelloFrameBytes, 64 KiB).' },
  ACP_ERR_WIRE_BAD_FRAME: { kind: 'bad-frame', summary: 'A frame could not be decoded, is not a valid envelope, or uses CBOR the protocol does not (tags such as bignums or shared references, nesting beyond api.maxFrameDepth, more items than api.maxFrameItems); the message names what was found and its offset.' },
  ACP_ERR_WIRE_NO_HELLO: { kind: 'bad-frame', summary: 'A connection sent something other than hello first, or nothing in time.' },
  ACP_ERR_WIRE_BAD_KEY: { kind: 'unauthorized', summary: 'The hello carried a wrong API key.' },
  ACP_ERR_WIRE_BAD_HELLO: { kind: 'bad-frame', summary: 'The hello names another cluster or an unsupported protocol version.' },
  ACP_ERR_WIRE_CLOSED: { kind: 'node-unreachable', summary: 'The connection closed before the answer arrived.' },
  ACP_ERR_SUPERVISOR_INTENSITY: { kind: 'failed', summary: 'A child crashed more often than its restart intensity allows; the supervisor escalated.' },
  ACP_ERR_SUPERVISOR_START_FAILED: { kind: 'failed', summary: 'A child failed to start.' },
  ACP_ERR_SUPERVISOR_SPEC: { kind: 'bad-request', summary: 'A supervisor or child specification is invalid.' },
  ACP_ERR_THREAD_EXITED: { kind: 'actor-crashed', summary: 'The worker thread hosting an actor exited.' },
  ACP_ERR_PROCESS_EXITED: { kind: 'actor-crashed', summary: 'The child process hosting an actor exited (or its channel to the daemon closed).' },
  ACP_ERR_PROCESS_START_FAILED: { kind: 'failed', summary: 'The child process for a process-isolated service did not start, connect back or start its actor.' },
  ACP_ERR_ISOLATION_UNSUPPORTED: { kind: 'bad-request', summary: 'The service cannot run with the configured isolation.' },
  ACP_ERR_CONFIG_INVALID: { kind: 'bad-request', summary: 'The node configuration file is invalid.' },
  ACP_ERR_CONFIG_MISMATCH: { kind: 'bad-request', summary: 'A flag contradicts the identity already stored in the home directory.' },
  ACP_ERR_DAEMON_RUNNING: { kind: 'conflict', summary: 'A daemon already runs on this home directory.' },
  ACP_ERR_DAEMON_NOT_RUNNING: { kind: 'node-unreachable', summary: 'No daemon runs on this home directory.' },
  ACP_ERR_DAEMON_START_FAILED: { kind: 'failed', summary: 'The daemon did not come up.' },
  ACP_ERR_DAEMON_SHUTTING_DOWN: { kind: 'actor-stopped', summary: 'The daemon is shutting down and takes no new work.' },
  ACP_ERR_CLI_USAGE: { kind: 'bad-request', summary: 'A command was called with bad arguments.' },
  ACP_ERR_WEB_NOT_MANAGEMENT: { kind: 'bad-request', summary: 'The node is not a management node and serves no web UI (acp node set NAME --management on).' },
  ACP_ERR_WEB_NEEDS_TLS: { kind: 'bad-request', summary: 'The web UI was asked to listen beyond loopback with no certificate to serve TLS with (webapi.tls, or the node certificate from acp init/join).' },
  ACP_ERR_WEB_SESSION_NOT_FOUND: { kind: 'not-found', summary: 'No web session has the id given to acp ui revoke (acp ui sessions lists them).' },
  ACP_ERR_WEB_BAD_BODY: { kind: 'bad-request', summary: "A REST request body is not JSON, is too large, has a content type the API does not take (send application/json, at most 1 MiB), or has a '__proto__' key or a 'constructor' key holding a 'prototype', which are refused." },
  ACP_ERR_WEB_NO_ROUTE: { kind: 'not-found', summary: 'No REST route has this method and path (GET /api/v1/openapi.json lists them).' },
  ACP_ERR_WEB_BAD_PATH: { kind: 'bad-request', summary: "A request path is not in resolved form: it has '.' or '..' segments (also percent-encoded), is not valid percent-encoding, or has a segment too long to route; paths are never resolved, so none leaves the API: send the resolved path." },
  ACP_ERR_WEB_REFUSED: { kind: 'bad-request', summary: 'The HTTP layer refused the request for a reason no more specific code covers (a Range or precondition header it cannot honour, say); the message gives the status and the reason.' },
  ACP_ERR_CLI_BAD_JSON: { kind: 'bad-request', summary: 'A command-line JSON argument did not parse.' },
  ACP_ERR_CDB_BAD_KEY: { kind: 'bad-request', summary: 'A CDB key or prefix does not follow the key grammar (object/<type>/<id>, meta|stats/<type>/<id>@<node>).' },
  ACP_ERR_CDB_BAD_VALUE: { kind: 'rejected-by-schema', summary: "A CDB value does not match its type's schema, or is not plain JSON-like data (acyclic, finite numbers, within cdb.maxValueDepth and cdb.maxValueBytes); the message names the field." },
  ACP_ERR_CDB_NOT_FOUND: { kind: 'not-found', summary: 'No record under the key (or only a tombstone).' },
  ACP_ERR_CDB_CONFLICT: { kind: 'conflict', summary: 'A compare-and-set found another version than the one expected.' },
  ACP_ERR_CDB_NOT_OWNER: { kind: 'forbidden', summary: 'A meta or stats key can only be written by the node it names.' },
  ACP_ERR_CDB_FULL: { kind: 'failed', summary: 'The in-memory meta/stats table reached its bound.' },
  ACP_ERR_CDB_STORE: { kind: 'failed', summary: 'The embedded store failed to open, read or write (a damaged record is named: delete it with acp cdb rm, or restore the store).' },
  ACP_ERR_SYNC_NO_MULTICAST: { kind: 'failed', summary: 'The multicast group cannot be joined; sync falls back to unicast over the agent.' },
  ACP_ERR_SYNC_NOT_PEER: { kind: 'forbidden', summary: "Sync traffic is accepted only from the cluster's nodes over the agent." },
  ACP_ERR_SYSTEM_NO_DISPLAY: { kind: 'bad-request', summary: "The system has no graphical display to show (its display is not 'vnc', or it is simulated), or it is not running." },
  ACP_ERR_SYSTEM_BAD_STATE: { kind: 'conflict', summary: "A system command that its current state does not allow (the message names the state)." },
  ACP_ERR_SYSTEM_UNKNOWN_NODE: { kind: 'bad-request', summary: "A new system's spec names a node (node, prefer) that is not a member of the cluster, or a witness (which runs no systems); the message lists the nodes that do." },
  ACP_ERR_SYSTEM_WRONG_NODE: { kind: 'bad-request', summary: 'The system is placed on another node; start it there.' },
  ACP_ERR_SYSTEM_NOT_MIGRATABLE: { kind: 'bad-request', summary: 'The system has a disk on a pool not marked shared, so it cannot migrate.' },
  ACP_ERR_VMM_FAILED: { kind: 'failed', summary: "A system's VMM or guest failed to start or to carry out a command." },
  ACP_ERR_VMM_NO_PKI: { kind: 'failed', summary: "A live migration needs the cluster CA and this node's certificate (its stream is TLS with them); the node has none: run acp init or acp join." },
  ACP_ERR_DRIVER_MISSING: { kind: 'failed', summary: "A driver's program (qemu-system-x86_64) is not installed on this node." },
  ACP_ERR_GUEST_IMAGE: { kind: 'failed', summary: 'The test guest image could not be built (apt-get download, dpkg-deb).' },
  ACP_ERR_AGENT_LISTEN: { kind: 'failed', summary: 'The agent cannot listen on its address.' },
  ACP_ERR_AGENT_BAD_CERT: { kind: 'unauthorized', summary: 'A peer presented no client certificate, or one the cluster CA did not issue or that expired.' },
  ACP_ERR_AGENT_NODE_MISMATCH: { kind: 'unauthorized', summary: "The certificate's common name is not the node named in the hello." },
  ACP_ERR_AGENT_QUEUE_FULL: { kind: 'failed', summary: "The outbound queue to a peer is full; the message was not sent." },
  ACP_ERR_AGENT_NO_PKI: { kind: 'failed', summary: 'This node has no cluster certificates: run acp init or acp join first.' },
  ACP_ERR_TARGET_IS_SELF: { kind: 'bad-request', summary: 'The request names this node (or the node a system already runs on) where another node is needed.' },
  ACP_ERR_PKI_FINGERPRINT_MISMATCH: { kind: 'unauthorized', summary: "The server's CA is not the one the join token names." },
  ACP_ERR_PKI_BAD_CSR: { kind: 'bad-request', summary: 'A certificate signing request did not parse, has a bad signature or weak key, or names another node.' },
  ACP_ERR_PKI_BAD_CERT: { kind: 'bad-request', summary: 'A certificate or key in PEM form did not parse, or the CA key does not match the CA certificate.' },
  ACP_ERR_PKI_BAD_TOKEN: { kind: 'unauthorized', summary: 'A join token is malformed, unknown, or carries the wrong secret.' },
  ACP_ERR_PKI_TOKEN_USED: { kind: 'unauthorized', summary: 'A join token was already used; tokens work once.' },
  ACP_ERR_PKI_TOKEN_EXPIRED: { kind: 'unauthorized', summary: 'A join token expired before it was used.' },
  ACP_ERR_PKI_LEDGER: { kind: 'failed', summary: 'The join-token ledger file is unreadable or corrupt.' },
  ACP_ERR_AUTH_FORBIDDEN: { kind: 'forbidden', summary: 'The sender (operator, token role, peer node or actor) is not allowed to send this message type to this actor.' },
  ACP_ERR_AUTH_BAD_TOKEN: { kind: 'unauthorized', summary: 'An API token is malformed, unknown, revoked or expired.' },
  ACP_ERR_API_LIMIT: { kind: 'failed', summary: "A connection reached one of its limits (watches or asks in flight); the request was not carried out." },
  ACP_ERR_NO_PRIMARY: { kind: 'node-unreachable', summary: 'A message to @primary found no monitor holding the primary lease (no quorum of voters, or an election under way); acp cluster status shows the voters present and needed.' },
  ACP_ERR_MONITOR_WEBHOOK: { kind: 'failed', summary: 'An alarm notification could not be delivered: the webhook did not answer, or answered other than 2xx (the message names the target and what happened).' },
  ACP_ERR_HA_GUARD: { kind: 'failed', summary: 'The fence guard could not be fed: its pipe is closed (it died); it is restarted at the next feed.' },
  ACP_ERR_HA_GUARD_DOWN: { kind: 'failed', summary: "An HA QEMU guest is started by its node's fence guard, and no guard answers on the node's run dir socket (fence-guard.sock), or it failed the request; the HA service starts a guard before each HA start, so see log/fence-guard.log and the daemon's log." },
  ACP_ERR_HA_GUARD_REFUSED: { kind: 'failed', summary: "The fence guard refused to start an HA guest's QEMU: the request was malformed (not this system's QEMU arguments), the node holds no HA lease (the guard is not armed), or the guard's daemon is gone; the message says which." },
  ACP_ERR_HA_SETPRIV_MISSING: { kind: 'failed', summary: 'setpriv (util-linux) is not installed on this node: an HA QEMU guest runs under `setpriv --pdeathsig KILL` so that it dies with the fence guard; install util-linux.' },
  ACP_ERR_SYSTEM_HA_MANAGED: { kind: 'conflict', summary: 'The system is HA: the HA manager decides where it runs and starts it; its object’s haState (started or stopped) says whether it runs; it is not started on a node by hand.' },
  ACP_ERR_HA_NOT_MANAGER: { kind: 'node-unreachable', summary: 'This node runs no HA manager now (it is not the primary, or took over moments ago); ask acp://<cluster>/@primary/ha.' },
  ACP_ERR_NETWORK_TOOL_MISSING: { kind: 'failed', summary: 'A program the Network service runs (ip or bridge from iproute2, vppctl) is not installed on this node; the message names the command.' },
  ACP_ERR_NETWORK_COMMAND: { kind: 'failed', summary: 'An iproute2 command was refused, failed or timed out; the message names the command and what it printed.' },
  ACP_ERR_NETWORK_BAD_OUTPUT: { kind: 'failed', summary: 'An iproute2 command printed output that is not the JSON expected; the message names the command.' },
  ACP_ERR_NETWORK_VPP_UNAVAILABLE: { kind: 'failed', summary: 'A vpp-vlan network needs vppctl and a running VPP on the node; the message says which is missing.' },
  ACP_ERR_NETWORK_NOT_CARRIED: { kind: 'bad-request', summary: "A system's NIC names a network this node does not carry (its nodes list leaves the node out); the message names both." },
  ACP_ERR_NETWORK_UNSUPPORTED: { kind: 'bad-request', summary: "A system's NIC asks for what this node does not realize (a VLAN tag or trunk, which need a VLAN-aware bridge; a rate limit); the message names the field and what to use instead." },
  ACP_ERR_NETWORK_IN_USE: { kind: 'conflict', summary: 'A network cannot be removed while systems have NICs on it; the message names the systems.' },
  ACP_ERR_STORAGE_UNSUPPORTED: { kind: 'failed', summary: "A storage type or share protocol this node cannot provide (lvm-thin: no device-mapper, or no LVM adapter yet; nfs or cifs without the kernel's client or the mount helper); the message names what is missing." },
  ACP_ERR_STORAGE_TOOL_MISSING: { kind: 'failed', summary: 'A program the Storage service runs (qemu-img, lsblk, btrfs, sshfs, mount) is not installed on this node; the message names the command and the package.' },
  ACP_ERR_STORAGE_COMMAND: { kind: 'failed', summary: 'A storage command (qemu-img, lsblk, btrfs, sshfs, mount) failed or timed out; the message names the command and what it printed.' },
  ACP_ERR_STORAGE_BAD_OUTPUT: { kind: 'failed', summary: 'A storage command printed output that is not the JSON expected; the message names the command.' },
  ACP_ERR_STORAGE_WRONG_FORMAT: { kind: 'bad-request', summary: "A volume's format, or a pool's content list, does not fit what was asked of it: an ISO image as a disk, resized, snapshotted or cloned; a qcow2 image as the CD-ROM; a raw volume snapshotted outside a btrfs pool; an ISO imported into a pool that holds images, or the reverse. The message says what fits." },
  ACP_ERR_STORAGE_NOT_FOUND: { kind: 'not-found', summary: 'A pool, share, volume or snapshot named in a request does not exist; the message names it.' },
  ACP_ERR_STORAGE_EXISTS: { kind: 'conflict', summary: 'A pool, share, volume or snapshot of that name exists already.' },
  ACP_ERR_STORAGE_IN_USE: { kind: 'conflict', summary: 'A volume used by a running system cannot be removed or rolled back (nor shrunk), and a pool with volumes or a share under a pool cannot be removed; the message names the user.' },
  ACP_ERR_STORAGE_NOT_CARRIED: { kind: 'bad-request', summary: 'A pool is not carried by this node (its nodes list leaves the node out) or is not active here; the message names the pool, the node and why.' },
  ACP_ERR_STORAGE_BAD_PATH: { kind: 'bad-request', summary: "A pool or share path is not an absolute, normalized path or lies in the host's own system directories, a volume path would leave its pool, or an import is not a regular file in an import directory." },
  ACP_ERR_INTERNAL: { kind: 'internal', summary: 'An unexpected internal error; the log has the details.' },
} as const;

export type ErrorCode = keyof typeof errorCatalog;
export type ErrorKind = (typeof errorCatalog)[ErrorCode]['kind'];

/** The plain-data form of an error, as it travels in a wire envelope's `err` field. */
export interface ErrorData {
  code: ErrorCode;
  kind: ErrorKind;
  message: string;
  details?: unknown;
}

export class AcpError extends Error {
  readonly code: ErrorCode;
  readonly kind: ErrorKind;
  readonly details: unknown;

  constructor(code: ErrorCode, message: string, details?: unknown) {
    super(message);
    this.name = 'AcpError';
    this.code = code;
    this.kind = errorCatalog[code].kind;
    this.details = details;
  }

  toData(): ErrorData {
    const data: ErrorData = { code: this.code, kind: this.kind, message: this.message };
    if (this.details !== undefined) data.details = this.details;
    return data;
  }

  static fromData(data: ErrorData): AcpError {
    const code: ErrorCode = isErrorCode(data.code) ? data.code : 'ACP_ERR_INTERNAL';
    return new AcpError(code, data.message, data.details);
  }

  /** Any thrown value as an AcpError; unknown errors become ACP_ERR_INTERNAL with their message. */
  static from(error: unknown, fallback: ErrorCode = 'ACP_ERR_INTERNAL'): AcpError {
    if (error instanceof AcpError) return error;
    const message = error instanceof Error ? error.message : String(error);
    return new AcpError(fallback, message);
  }
}

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(errorCatalog, code);
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

const CRASH_CODES: ReadonlySet<string> = new Set(['ACP_ERR_CHAOS_CRASH', 'ACP_ERR_THREAD_EXITED', 'ACP_ERR_ACTOR_CRASHED']);

/**
 * What an actor's `receive` threw, as the runtime reads it: an AcpError is a refusal, answered to the
 * asker while the actor runs on, unless it says the actor is broken (a crash code, or an internal
 * failure); anything else is a crash, which its supervisor handles.
 */
export function isRefusal(error: unknown): error is AcpError {
  return error instanceof AcpError && !CRASH_CODES.has(error.code) && error.kind !== 'internal';
}
