/**
 * The authority tables, walked: every message type of every service has an entry, and for each
 * entry one sender that is allowed and one that is refused (ACP_ERR_AUTH_FORBIDDEN).
 */
import test from 'ava';
import type { ZodType } from 'zod';
import { apiAuthority, service as apiService } from '../actors/api/index.js';
import { cdbAuthority, service as cdbService } from '../actors/cdb/index.js';
import { frameworkAuthority, frameworkSchema } from '../actors/framework/index.js';
import { hypervisorAuthority, service as hypervisorService } from '../actors/hypervisor/index.js';
import { agentAuthority, service as agentService } from '../actors/agent/index.js';
import { service as vmmService, vmmAuthority } from '../actors/vmm/index.js';
import { service as monitorService } from '../actors/monitor/index.js';
import { service as haService } from '../actors/ha/index.js';
import { networkAuthority, service as networkService } from '../actors/network/index.js';
import { storageAuthority, service as storageService } from '../actors/storage/index.js';
import { service as webapiService } from '../webapi/service.js';
import { authorize, universalAuthority, type Access, type AuthorityTable } from '../runtime/authority.js';
import type { Principal } from '../runtime/principal.js';
import { relayedBy } from '../runtime/principal.js';

const self = { cluster: 'lab', node: 'n1' };

const tables: Record<string, { table: AuthorityTable; schema: ZodType; path: string }> = {
  framework: { table: frameworkAuthority, schema: frameworkSchema, path: 'framework' },
  agent: { table: agentAuthority, schema: agentService.schema, path: 'agent' },
  api: { table: apiAuthority, schema: apiService.schema, path: 'api' },
  cdb: { table: cdbAuthority, schema: cdbService.schema, path: 'cdb' },
  hypervisor: { table: hypervisorAuthority, schema: hypervisorService.schema, path: 'hypervisor' },
  vmm: { table: vmmAuthority, schema: vmmService.schema, path: 'hypervisor/vmm/web1' },
  monitor: { table: monitorService.authority, schema: monitorService.schema, path: 'monitor' },
  ha: { table: haService.authority, schema: haService.schema, path: 'ha' },
  network: { table: networkAuthority, schema: networkService.schema, path: 'network' },
  storage: { table: storageAuthority, schema: storageService.schema, path: 'storage' },
  webapi: { table: webapiService.authority, schema: webapiService.schema, path: 'webapi' },
};

/** The `type` literals of a discriminated union (or a single object) schema. */
function messageTypes(schema: ZodType): string[] {
  const withOptions = schema as unknown as { options?: Array<{ shape: { type: { value: string } } }>; shape?: { type: { value: string } } };
  if (withOptions.options) return withOptions.options.map((option) => option.shape.type.value);
  return withOptions.shape ? [withOptions.shape.type.value] : [];
}

const actor = (node: string, service: string): Principal => (node === self.node ? { kind: 'actor', path: `acp://lab/${node}/${service}` } : relayedBy(node, `actor:acp://lab/${node}/${service}`));
const token = (role: 'admin' | 'operator' | 'auditor'): Principal => ({ kind: 'token', id: 'abcdef012345', role });

/** One sender the access allows and one it refuses. */
function senders(access: Access): { allowed: Principal; refused: Principal } {
  if (typeof access === 'object') {
    const rule = access.internal[0]!;
    const node = rule.nodes === 'peers' ? 'n2' : 'n1';
    const service = rule.below ? `${rule.service}/child` : rule.service;
    return { allowed: actor(node, service), refused: { kind: 'operator' } };
  }
  switch (access) {
    case 'read':
      // A peer relaying for another node's actor: never allowed, whatever the message.
      return { allowed: token('auditor'), refused: { kind: 'node', node: 'n2', for: { kind: 'actor', path: 'acp://lab/n3/cdb' } } };
    case 'operate':
      return { allowed: token('operator'), refused: token('auditor') };
    case 'admin':
      return { allowed: token('admin'), refused: token('operator') };
    case 'local-admin':
      return { allowed: { kind: 'operator' }, refused: relayedBy('n2', 'operator') };
  }
}

for (const [service, { table, schema, path }] of Object.entries(tables)) {
  test(`${service}: every message type of its schema has an entry in its authority table`, (t) => {
    const types = messageTypes(schema).filter((type) => type !== 'terminated');
    t.true(types.length > 0);
    for (const type of types) t.truthy(table[type], `${service} has no authority entry for '${type}'`);
  });

  const entries = { ...universalAuthority, ...table };
  for (const [type, access] of Object.entries(entries)) {
    test(`${service}: '${type}' (${typeof access === 'string' ? access : 'internal'}) is allowed for one sender and refused for another`, (t) => {
      const target = { ...self, path: `acp://lab/n1/${path}` };
      const { allowed, refused } = senders(access);
      t.is(authorize(allowed, target, table, type), undefined);
      const refusal = authorize(refused, target, table, type);
      t.is(refusal?.code, 'ACP_ERR_AUTH_FORBIDDEN');
      t.true(refusal!.message.includes(`'${type}'`), 'the refusal names the message type');
    });
  }
}

test('a type no table names is private to actors: an actor may send it, the operator may not', (t) => {
  const target = { ...self, path: 'acp://lab/n1/api/watch-1' };
  t.is(authorize({ kind: 'actor', path: 'acp://lab/n1/cdb' }, target, undefined, 'cdb.events'), undefined);
  t.is(authorize(relayedBy('n2', 'actor:acp://lab/n2/cdb'), target, undefined, 'cdb.events'), undefined);
  t.is(authorize({ kind: 'operator' }, target, undefined, 'cdb.events')?.code, 'ACP_ERR_AUTH_FORBIDDEN');
});

test('a node vouches only for its own actors, and relays one hop', (t) => {
  t.throws(() => relayedBy('n2', 'actor:acp://lab/n3/hypervisor'), { message: /another node/ });
  t.throws(() => relayedBy('n2', 'node:n3'), { message: /relayed sender/ });
  t.throws(() => relayedBy('n2', 'token:x:root'), { message: /token:<id>:<role>/ });
  t.deepEqual(relayedBy('n2', 'operator'), { kind: 'node', node: 'n2', for: { kind: 'operator' } });
});

test('the VMM refuses vmm.migrate from everyone but its hypervisor, the admin key included', (t) => {
  const target = { ...self, path: 'acp://lab/n1/hypervisor/vmm/web1' };
  t.is(authorize({ kind: 'operator' }, target, vmmAuthority, 'vmm.migrate')?.code, 'ACP_ERR_AUTH_FORBIDDEN');
  t.is(authorize(token('admin'), target, vmmAuthority, 'vmm.migrate')?.code, 'ACP_ERR_AUTH_FORBIDDEN');
  t.is(authorize(actor('n2', 'hypervisor'), target, vmmAuthority, 'vmm.migrate')?.code, 'ACP_ERR_AUTH_FORBIDDEN');
  t.is(authorize({ kind: 'actor', path: 'acp://lab/n1/cdb' }, target, vmmAuthority, 'vmm.migrate')?.code, 'ACP_ERR_AUTH_FORBIDDEN');
  t.is(authorize(actor('n1', 'hypervisor'), target, vmmAuthority, 'vmm.migrate'), undefined);
});

test('the Framework\'s fault messages need the admin role: an admin token may send them, an operator token may not', (t) => {
  const target = { ...self, path: 'acp://lab/n1/framework' };
  for (const type of ['faults.kill', 'faults.stop', 'faults.partition', 'faults.drop']) {
    t.is(frameworkAuthority[type], 'admin', type);
    t.is(authorize(token('admin'), target, frameworkAuthority, type), undefined, type);
    t.is(authorize(token('operator'), target, frameworkAuthority, type)?.code, 'ACP_ERR_AUTH_FORBIDDEN', type);
    // Over the agent too (a chaos run reaches other nodes so): admin, not local-admin.
    t.is(authorize({ kind: 'operator', via: 'agent' }, target, frameworkAuthority, type), undefined, type);
  }
  t.is(frameworkAuthority['framework.qemu'], 'read');
});
