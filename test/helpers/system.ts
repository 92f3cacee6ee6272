import type { ExecutionContext } from 'ava';
import type { SystemMeta } from '../../actors/hypervisor/index.js';
import type { AcpClient } from '../../runtime/client.js';
import type { Message } from '../../runtime/messages.js';
import { allRunning, client, makeHome, startDaemon } from './node.js';

/** One node (n1) running in this process, every service up, and a client on it. */
export async function systemNode(t: ExecutionContext, options: { statsMs?: number } = {}): Promise<{ home: string; api: AcpClient }> {
  const home = makeHome(t, options);
  const daemon = await startDaemon(t, home);
  await allRunning(daemon);
  return { home, api: await client(t, home) };
}

/** A system's state on n1, from its meta. */
export async function systemMeta(api: AcpClient, id: string): Promise<SystemMeta> {
  return (await api.ask<Message & { record: { value: SystemMeta } }>('cdb', { type: 'cdb.get', key: `meta/system/${id}@n1` })).record.value;
}
