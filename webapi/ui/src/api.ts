/** REST calls the page makes before it has a WebSocket (login, who am I, the node's identity). */
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
