import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type Route = (request: IncomingMessage) => Promise<{ status: number; type: string; body: string }>;

/** A small HTTP server bound to loopback only; routes are exact paths for GET. */
export class LoopbackHttpServer {
  private server: Server | undefined;

  constructor(private readonly routes: ReadonlyMap<string, Route>) {}

  async listen(host: string, port: number): Promise<number> {
    const server = createServer((request, response) => void this.handle(request, response));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    return (server.address() as AddressInfo).port;
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://localhost');
    const route = request.method === 'GET' ? this.routes.get(url.pathname) : undefined;
    if (!route) {
      response.writeHead(request.method === 'GET' ? 404 : 405, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ error: { code: 'ACP_ERR_CLI_USAGE', message: `no route for ${request.method} ${url.pathname}` } }));
      return;
    }
    try {
      const result = await route(request);
      response.writeHead(result.status, { 'content-type': result.type, 'cache-control': 'no-store' });
      response.end(result.body);
    } catch (error) {
      response.writeHead(500, { 'content-type': 'application/json' });
      response.end(JSON.stringify({ error: { code: 'ACP_ERR_INTERNAL', message: (error as Error).message } }));
    }
  }
}
