import { createHmac } from 'node:crypto';
import { AcpError, errorMessage } from '../runtime/errors.js';

/**
 * A value fetch can send in an HTTP header (RFC 9110 field-value, as undici takes it): visible ASCII,
 * with spaces only between visible characters. CR, LF, tab, other control characters and anything
 * outside ASCII are refused (undici throws "invalid header value"); a leading or trailing space
 * would be stripped, changing the token.
 */
export const HEADER_VALUE_PATTERN = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/;
export const HEADER_VALUE_RULE = 'must be usable as an HTTP header value: visible ASCII characters (0x21-0x7E) with spaces only between them; no CR, LF, tab or other control characters and no non-ASCII characters';

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

/**
 * Why a fetch failed, with what undici keeps in `cause` (its code and message): "fetch failed" alone
 * says the same for a refused connection, a DNS failure or a TLS error.
 */
export function fetchFailure(error: unknown): string {
  const message = errorMessage(error);
  const cause = error instanceof Error ? error.cause : undefined;
  if (!(cause instanceof Error)) return message;
  const code = (cause as { code?: unknown }).code;
  const inner = cause.message || (cause instanceof AggregateError ? cause.errors.map(errorMessage).join('; ') : cause.name);
  const codeText = typeof code === 'string' && !inner.includes(code) ? ` (${code})` : '';
  return `${message}: ${inner}${codeText}`;
}

/**
 * One HTTP POST of JSON; resolves with the status, rejects (ACP_ERR_MONITOR_WEBHOOK) on a network
 * error, a timeout or a redirect: redirects are not followed, as the body and its secrets would go
 * where the receiver says.
 */
export async function postWebhook(request: WebhookRequest): Promise<number> {
  const text = JSON.stringify(request.body);
  const headers: Record<string, string> = { 'content-type': 'application/json', 'x-acp-delivery': request.deliveryId, 'user-agent': 'acp-monitor' };
  if (request.bearer) headers['authorization'] = `Bearer ${request.bearer}`;
  if (request.hmacSecret) headers['x-acp-signature'] = `sha256=${createHmac('sha256', request.hmacSecret).update(text).digest('hex')}`;
  let response: Response;
  try {
    response = await fetch(request.url, { method: 'POST', headers, body: text, signal: AbortSignal.timeout(request.timeoutMs), redirect: 'manual' });
  } catch (error) {
    throw new AcpError('ACP_ERR_MONITOR_WEBHOOK', fetchFailure(error));
  }
  await response.arrayBuffer().catch(() => undefined);
  if (response.status >= 300 && response.status < 400) {
    const location = response.headers.get('location');
    const to = location ? ` to ${JSON.stringify(location.slice(0, 300))}` : '';
    throw new AcpError('ACP_ERR_MONITOR_WEBHOOK', `HTTP ${response.status}, a redirect${to}: redirects are not followed; set the target's webhook to the URL that answers`);
  }
  return response.status;
}
