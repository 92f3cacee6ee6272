/**
 * A guest's graphical display in the browser: `/ws/display/<id>` relays the RFB stream between
 * noVNC and the guest's VNC server (a Unix socket in its run dir on this node). The connection
 * speaks for the session's principal (or a bearer token): the hypervisor decides, through the
 * relay's authority checks, whether it may (`system.display`, operator role: VNC carries keys and
 * mouse) and whether the guest has a display running here. Same-origin pages only.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { WebSocket } from 'ws';
import { z } from 'zod';
import { connectDisplay } from '../adapters/drivers/vnc.js';
import { guestFiles } from '../actors/vmm/index.js';
import { AcpError, errorMessage } from '../runtime/errors.js';
import type { Logger } from '../runtime/logger.js';
import type { Message } from '../runtime/messages.js';
import { NAME_PATTERN } from '../runtime/path.js';
import { formatPrincipal, type Principal } from '../runtime/principal.js';
import { principalOf, SESSION_COOKIE, type WebAuth } from './auth.js';

export interface DisplayRouteOptions {
  auth: WebAuth;
  log: Logger;
  /** This node's name and home (the guest's run dir is under it). */
  node: string;
  home: string;
  /** Asks an actor on a node as the principal (authority checked by the relay). */
  ask(principal: Principal, node: string, service: string, message: Message): Promise<unknown>;
  /** The node a system runs on (or is placed on). */
  nodeOf(principal: Principal, id: string): Promise<string>;
  countRefusal(): void;
}

const idParam = z.strictObject({ id: z.string().regex(NAME_PATTERN) });
/** Past this much unsent to the browser, the guest's stream waits (a slow client never fills memory). */
const HIGH_WATER_BYTES = 4 * 1024 * 1024;
/** How often an open display checks that its session is still valid. */
const SESSION_CHECK_MS = 5000;

/** Whether the page asking is this server's own (a WebSocket from another site's page is refused). */
export function sameOrigin(request: FastifyRequest): boolean {
  const { host, origin } = request.headers;
  return origin === undefined || host === undefined || origin === `http://${host}` || origin === `https://${host}`;
}

/** WebSocket close codes in the private range, and a reason that fits a close frame (123 bytes). */
function refuse(socket: WebSocket, error: unknown): void {
  const refusal = AcpError.from(error);
  const code = refusal.kind === 'unauthorized' ? 4401 : refusal.kind === 'forbidden' ? 4403 : refusal.kind === 'not-found' ? 4404 : 4400;
  socket.close(code, `${refusal.code}: ${refusal.message}`.slice(0, 120));
}

export function registerDisplay(app: FastifyInstance, options: DisplayRouteOptions): void {
  app.get('/ws/display/:id', { websocket: true }, (socket, request) => {
    // Nothing comes from noVNC before the server's greeting, but hold what does until the guest is reached.
    const early: Buffer[] = [];
    const hold = (data: Buffer) => early.push(data);
    socket.on('message', hold);
    void (async () => {
      if (!sameOrigin(request)) {
        throw new AcpError('ACP_ERR_AUTH_FORBIDDEN', 'cross-origin WebSocket refused');
      }
      const principal = principalOf(request, options.auth);
      const parsed = idParam.safeParse(request.params);
      if (!parsed.success) throw new AcpError('ACP_ERR_SCHEMA_REJECTED', 'a display is /ws/display/<system id>');
      const { id } = parsed.data;
      const node = await options.nodeOf(principal, id);
      // The relay checks the principal's role; the hypervisor, that the guest has a display running there.
      await options.ask(principal, node, 'hypervisor', { type: 'system.display', id });
      if (node !== options.node) {
        throw new AcpError('ACP_ERR_WEB_DISPLAY_REMOTE', `system '${id}' runs on node '${node}': open the web UI of ${node} to see its display`);
      }
      const guest = await connectDisplay(guestFiles(options.home, id).runDir);
      return { guest, principal, id };
    })().then(
      ({ guest, principal, id }) => {
        if (socket.readyState !== socket.OPEN) {
          guest.destroy();
          return;
        }
        options.log.info({ system: id, principal: formatPrincipal(principal) }, 'display opened');
        socket.off('message', hold);
        for (const data of early.splice(0)) guest.write(data);
        socket.on('message', (data: Buffer) => guest.write(data));
        guest.on('data', (chunk: Buffer) => {
          socket.send(chunk, { binary: true }, () => {
            if (guest.isPaused() && socket.bufferedAmount < HIGH_WATER_BYTES / 2) guest.resume();
          });
          if (socket.bufferedAmount > HIGH_WATER_BYTES) guest.pause();
        });
        const cookie = request.cookies[SESSION_COOKIE];
        const check = setInterval(() => {
          try {
            if (cookie && !request.headers.authorization) options.auth.session(cookie);
          } catch (error) {
            refuse(socket, error);
          }
        }, SESSION_CHECK_MS);
        const end = () => {
          clearInterval(check);
          guest.destroy();
          if (socket.readyState === socket.OPEN) socket.close(1000, 'the guest display closed');
        };
        guest.once('close', end);
        guest.once('error', (error) => options.log.debug({ system: id, err: errorMessage(error) }, 'display stream error'));
        socket.once('close', () => {
          end();
          options.log.info({ system: id }, 'display closed');
        });
      },
      (error: unknown) => {
        const refusal = AcpError.from(error);
        if (refusal.kind === 'forbidden') options.countRefusal();
        options.log.info({ code: refusal.code, err: refusal.message }, 'display refused');
        refuse(socket, refusal);
      },
    );
  });
}
