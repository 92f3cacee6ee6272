/**
 * The QEMU driver's side of the fence guard's spawn channel (fence-guard-protocol.ts): asks the
 * node's guard to start an HA guest's QEMU as its child. A guard being started (the daemon starts
 * one before any HA start, and again when its guard died) is waited for a few seconds; then the
 * start is refused, saying why.
 */
import { connect } from 'node:net';
import { AcpError } from '../runtime/errors.js';
import { spawnReplySchema, type SpawnRequest } from './fence-guard-protocol.js';

const RETRY_MS = 100;
const ANSWER_MS = 10_000;

type Attempt = { kind: 'reply'; line: string } | { kind: 'absent'; why: string };

function once(socketPath: string, request: SpawnRequest): Promise<Attempt> {
  return new Promise((resolve, reject) => {
    const socket = connect(socketPath);
    let buffered = '';
    let connected = false;
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new AcpError('ACP_ERR_HA_GUARD_DOWN', `the fence guard on ${socketPath} did not answer a spawn request within ${ANSWER_MS} ms; it may hang (see <home>/log/fence-guard.log)`));
    }, ANSWER_MS);
    socket.setEncoding('utf8');
    socket.once('connect', () => {
      connected = true;
      socket.write(`${JSON.stringify(request)}\n`);
    });
    socket.on('data', (chunk: string) => {
      buffered += chunk;
    });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (!connected && (error.code === 'ENOENT' || error.code === 'ECONNREFUSED')) resolve({ kind: 'absent', why: error.code });
      else reject(new AcpError('ACP_ERR_HA_GUARD_DOWN', `the fence guard on ${socketPath} failed the spawn request: ${error.message}`));
    });
    socket.once('close', () => {
      clearTimeout(timer);
      if (connected) resolve({ kind: 'reply', line: buffered.split('\n')[0] ?? '' });
    });
  });
}

/**
 * Has the guard listening on `socketPath` start `argv` (QEMU's arguments) for system `request.system`;
 * its answer: QEMU's pid and the guard's. Waits up to `waitMs` for a guard to listen.
 */
export async function spawnUnderGuard(socketPath: string, request: Omit<SpawnRequest, 'type'>, waitMs = 5000): Promise<{ pid: number; guard: number }> {
  const until = Date.now() + waitMs;
  for (;;) {
    const attempt = await once(socketPath, { type: 'spawn', ...request });
    if (attempt.kind === 'absent') {
      if (Date.now() < until) {
        await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
        continue;
      }
      throw new AcpError(
        'ACP_ERR_HA_GUARD_DOWN',
        `system '${request.system}' is HA: its QEMU is started by this node's fence guard, which does not listen on ${socketPath} (${attempt.why} for ${waitMs} ms); the HA service starts a guard before each HA start: see <home>/log/fence-guard.log and the daemon's log`,
      );
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(attempt.line);
    } catch {
      throw new AcpError('ACP_ERR_HA_GUARD_DOWN', `the fence guard on ${socketPath} closed the spawn request without a JSON answer (${JSON.stringify(attempt.line.slice(0, 200))})`);
    }
    const reply = spawnReplySchema.safeParse(parsed);
    if (!reply.success) throw new AcpError('ACP_ERR_HA_GUARD_DOWN', `the fence guard on ${socketPath} answered what is not a spawn reply: ${reply.error.issues[0]?.message ?? 'invalid'}`);
    if (!reply.data.ok) throw new AcpError(reply.data.code, reply.data.error);
    return { pid: reply.data.pid, guard: reply.data.guard };
  }
}
