import { createHmac } from 'node:crypto';

export interface WebhookRequest {
  url: string;
  body: unknown;
  bearer?: string;
  /** HMAC-SHA256 of the body with this secret, sent as `X-ACP-Signature: sha256=<hex>`. */
  hmacSecret?: string;
  /** Same for every retry of one notification, so a receiver can drop a second copy. */
  deliveryId: string;
  timeoutMs: number;
}

/** One HTTP POST of JSON; resolves with the status, rejects on a network error or timeout. */
export async function postWebhook(request: WebhookRequest): Promise<number> {
  const text = JSON.stringify(request.body);
  const headers: Record<string, string> = { 'content-type': 'application/json', 'x-acp-delivery': request.deliveryId, 'user-agent': 'acp-monitor' };
  if (request.bearer) headers['authorization'] = `Bearer ${request.bearer}`;
  if (request.hmacSecret) headers['x-acp-signature'] = `sha256=${createHmac('sha256', request.hmacSecret).update(text).digest('hex')}`;
  const response = await fetch(request.url, { method: 'POST', headers, body: text, signal: AbortSignal.timeout(request.timeoutMs), redirect: 'error' });
  await response.arrayBuffer().catch(() => undefined);
  return response.status;
}
