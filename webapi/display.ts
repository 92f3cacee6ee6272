/**
 * A guest's graphical display in the browser: `/ws/display/<id>` relays the RFB stream between
 * noVNC and the guest's VNC server (a Unix socket in its run dir on this node). The connection
 * speaks for the session's principal (or a bearer token): the hypervisor decides, through the
 * relay's authority checks, whether it may (`system.display`, operator role: VNC carries keys and
 * mouse) and whether the guest has a display running there. A guest on this node is joined to
 * its VNC socket directly; one on another node through the webapi actors (display-relay.ts).
 * Same-origin pages only.
 */
import type { Socket } from 'node:net';
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
import { principalOf, type WebAuth } from './auth.js';
import type { DisplayRelay } from './display-relay.js';

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
  /** Displays of guests on other nodes. */
  relay: DisplayRelay;
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

/** Sends the guest's bytes to the browser; resolves when there is room for more. */
function toBrowser(socket: WebSocket, data: Uint8Array): Promise<void> {
  return new Promise((resolve) => {
    socket.send(data, { binary: true }, () => resolve());
    if (socket.bufferedAmount < HIGH_WATER_BYTES) resolve();
  });
}

/** Closes the WebSocket once the principal's web session has ended (checked every few seconds). */
function watchSession(socket: WebSocket, request: FastifyRequest, auth: WebAuth): () => void {
  const check = setInterval(() => {
    try {
      // The credentials it opened with, checked again: a session or a bearer token revoked since ends it.
      principalOf(request, auth);
    } catch (error) {
      refuse(socket, error);
    }
  }, SESSION_CHECK_MS);
  return () => clearInterval(check);
}

/** A guest on this node: the WebSocket and its VNC socket, joined. */
function pipeLocal(socket: WebSocket, guest: Socket, early: Buffer[]): void {
  for (const data of early.splice(0)) guest.write(data);
  socket.on('message', (data: Buffer) => guest.write(data));
  guest.on('data', (chunk: Buffer) => {
    guest.pause();
    void toBrowser(socket, chunk).then(() => guest.resume());
  });
  const end = () => {
    guest.destroy();
    if (socket.readyState === socket.OPEN) socket.close(1000, 'the guest display closed');
  };
  guest.once('close', end);
  guest.once('error', () => undefined);
  socket.once('close', end);
}

/** A guest on another node: the stream through the two nodes' webapi actors (display-relay.ts). */
async function pipeRemote(socket: WebSocket, relay: DisplayRelay, node: string, id: string, early: Buffer[], log: Logger): Promise<void> {
  let open = true;
  const stream = await relay.open(node, id, {
    write: (data) => (socket.readyState === socket.OPEN ? toBrowser(socket, data) : Promise.reject(new AcpError('ACP_ERR_SYSTEM_NO_DISPLAY', 'the browser went'))),
    close: (reason) => {
      open = false;
      if (socket.readyState === socket.OPEN) socket.close(1000, reason.slice(0, 120));
    },
  });
  if (socket.readyState !== socket.OPEN) return relay.close(stream);
  // The browser's keys and clicks, in order.
  let sending: Promise<unknown> = Promise.resolve();
  const send = (data: Buffer) => {
    sending = sending.then(() => relay.input(stream, data)).catch((error: unknown) => {
      log.debug({ system: id, err: errorMessage(error) }, 'display input not delivered');
      socket.close(1011, 'the display stream broke');
    });
  };
  for (const data of early.splice(0)) send(data);
  socket.on('message', send);
  socket.once('close', () => {
    if (open) relay.close(stream);
  });
}

export function registerDisplay(app: FastifyInstance, options: DisplayRouteOptions): void {
  app.get('/ws/display/:id', { websocket: true }, (socket, request) => {
    // Nothing comes from noVNC before the server's greeting, but hold what does until the guest is reached.
    const early: Buffer[] = [];
    const hold = (data: Buffer) => early.push(data);
    socket.on('message', hold);
    void (async () => {
      if (!sameOrigin(request)) throw new AcpError('ACP_ERR_AUTH_FORBIDDEN', 'cross-origin WebSocket refused');
      const principal = principalOf(request, options.auth);
      const parsed = idParam.safeParse(request.params);
      if (!parsed.success) throw new AcpError('ACP_ERR_SCHEMA_REJECTED', 'a display is /ws/display/<system id>');
      const { id } = parsed.data;
      const node = await options.nodeOf(principal, id);
      // The relay checks the principal's role; the hypervisor, that the guest has a display running there.
      await options.ask(principal, node, 'hypervisor', { type: 'system.display', id });
      if (socket.readyState !== socket.OPEN) return;
      socket.off('message', hold);
      const unwatch = watchSession(socket, request, options.auth);
      socket.once('close', unwatch);
      if (node === options.node) {
        const guest = await connectDisplay(guestFiles(options.home, id).runDir);
        if (socket.readyState !== socket.OPEN) return void guest.destroy();
        pipeLocal(socket, guest, early);
      } else await pipeRemote(socket, options.relay, node, id, early, options.log);
      options.log.info({ system: id, node, principal: formatPrincipal(principal) }, 'display opened');
      socket.once('close', () => options.log.info({ system: id }, 'display closed'));
    })().catch((error: unknown) => {
      const refusal = AcpError.from(error);
      if (refusal.kind === 'forbidden') options.countRefusal();
      options.log.info({ code: refusal.code, err: refusal.message }, 'display refused');
      if (socket.readyState === socket.OPEN) refuse(socket, refusal);
    });
  });
}
