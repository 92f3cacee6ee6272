/**
 * REST calls: those the page makes before it has a WebSocket (login, who am I, the node's
 * identity), and a new system (POST /api/v1/systems: the checks of its spec and of what it names
 * are the web API's, the same as the CLI's).
 */
import { WireError } from './wire.js';

export interface ErrorBody {
  error?: { code?: string; message?: string };
}

export async function rest<T>(path: string, init: RequestInit = {}): Promise<{ status: number; body: T & ErrorBody }> {
  const response = await fetch(path, { ...init, headers: { 'content-type': 'application/json', ...(init.headers ?? {}) }, credentials: 'same-origin' });
  const body = (await response.json().catch(() => ({}))) as T & ErrorBody;
  return { status: response.status, body };
}

export type Role = 'auditor' | 'operator' | 'admin';

const RANK: Record<Role, number> = { auditor: 1, operator: 2, admin: 3 };

export function allows(role: Role, needed: Role): boolean {
  return RANK[role] >= RANK[needed];
}

/** A REST call's body, or its refusal as the error the task log shows (code and message). */
export async function restOrThrow<T>(path: string, init: RequestInit = {}): Promise<T> {
  const { status, body } = await rest<T>(path, init);
  if (status >= 400) throw new WireError(body.error?.code ?? `HTTP_${status}`, body.error?.message ?? `the web API answered ${status}`);
  return body;
}
