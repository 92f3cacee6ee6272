/**
 * A QEMU guest's VNC server, for systems with `display: 'vnc'`: it listens on a Unix socket in the
 * guest's run dir (never on TCP), and the web API connects to it to relay the RFB stream to noVNC.
 */
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { AcpError } from '../../runtime/errors.js';

const CONNECT_MS = 5000;

/** Where a guest's VNC server listens. */
export function vncSocket(runDir: string): string {
  return join(runDir, 'vnc.sock');
}

/** A connection to a guest's VNC server (within CONNECT_MS), or a refusal saying why not. */
export function connectDisplay(runDir: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(vncSocket(runDir));
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new AcpError('ACP_ERR_VMM_FAILED', `the guest's VNC server did not answer within ${CONNECT_MS} ms`));
    }, CONNECT_MS);
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(new AcpError('ACP_ERR_SYSTEM_NO_DISPLAY', `cannot reach the guest's VNC server (${error.message}); a guest started before it had display: 'vnc' needs a restart`));
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve(socket);
    });
  });
}
