/**
 * Authority between real daemons: API tokens and their revocation on every node, a removed node's
 * certificate refused everywhere, keys rotated without a restart, and the exec: migration request
 * that once reached QEMU refused before it reaches the VMM.
 */
import { existsSync, readFileSync } from 'node:fs';
import test from 'ava';
import { connect } from '../node/client.js';
import { encodeFrame } from '../runtime/codec.js';
import { AcpError } from '../runtime/errors.js';
import type { Message } from '../runtime/messages.js';
import { apiKeyOf, askVia, cliError, cliOk, issue, RawTls, readSecret, secretPath, startCluster, type ClusterNode } from './helpers/agent.js';
import { allRunning, eventually, makeHome, runCli, startDaemon } from './helpers/node.js';

/** Polls quickly, to measure how soon a change reaches another node. */
async function within<T>(ms: number, what: string, check: () => Promise<T | undefined>): Promise<number> {
  const started = Date.now();
  await eventually(check, ms, what);
  return Date.now() - started;
}

async function refusedWith(work: () => Promise<unknown>): Promise<string | undefined> {
  try {
    await work();
    return undefined;
  } catch (error) {
    return error instanceof AcpError ? error.code : String(error);
  }
}

/** A TLS hello with `node`'s own certificate: answered (hello) or refused (the error's code). */
async function helloAs(target: ClusterNode, cert: { cert: string; key: string }, node: string, apiKey: string): Promise<string> {
  const raw = await RawTls.open(target.port, cert);
  try {
    raw.write(encodeFrame({ v: 1, k: 'hello', body: { cluster: 'lab', node, incarnation: 1, apiKey, proto: 1, role: 'client' } }));
    const answer = await raw.frame((envelope) => envelope.k === 'hello' || envelope.k === 'error', 5000);
    if (!answer) return raw.error ? `socket: ${raw.error.code ?? raw.error.message}` : 'no answer';
    return answer.k === 'hello' ? 'hello' : (answer.err?.code ?? 'error');
  } finally {
    raw.destroy();
  }
}

test('an auditor token reads but may not start a system; a token revoked on one node is refused on the others within 2 s, open connections included', async (t) => {
  t.timeout(120_000);
  const [n1, n2] = await startCluster(t, ['n1', 'n2']);
  const created = JSON.parse((await cliOk(['--json', 'token', 'api', 'create', '--role', 'auditor', '--comment', 'ci'], n1!.home)).stdout) as { id: string; secret: string };
  await cliOk(['system', 'create', 's1', '--driver', 'sim'], n1!.home);
  // The token works on n2 once its record has synced there.
  await eventually(async () => {
    const client = await connect({ home: n2!.home, token: created.secret }).catch(() => undefined);
    await client?.close();
    return client ? true : undefined;
  }, 20_000, 'the token to reach n2');
  const listed = await cliOk(['--token', created.secret, 'system', 'ls'], n2!.home);
  t.regex(listed.stdout, /s1\s+sim/);
  const start = await cliError(['--token', created.secret, 'system', 'start', 's1'], n1!.home);
  t.is(start.error?.code, 'ACP_ERR_AUTH_FORBIDDEN');
  t.regex(start.error?.message ?? '', /needs the operator role/);
  const write = await cliError(['--token', created.secret, 'cdb', 'put', 'object/network/x', '{"name":"x","type":"bridge"}'], n1!.home);
  t.is(write.error?.code, 'ACP_ERR_AUTH_FORBIDDEN');
  const ls = JSON.parse((await cliOk(['--json', 'token', 'api', 'ls'], n1!.home)).stdout) as { id: string; role: string; lastUsedAt: string | null }[];
  t.like(ls.find((token) => token.id === created.id), { role: 'auditor' });
  t.truthy(ls.find((token) => token.id === created.id)?.lastUsedAt);
  // An auditor cannot make itself an admin by writing a token record.
  const forged = await cliError(['--token', created.secret, 'cdb', 'put', `object/token/${created.id}`, '{}'], n1!.home);
  t.is(forged.error?.code, 'ACP_ERR_AUTH_FORBIDDEN');

  const open = await connect({ home: n2!.home, token: created.secret });
  t.teardown(() => open.close().catch(() => undefined));
  await open.ask('framework', { type: 'status' });
  await cliOk(['token', 'api', 'rm', created.id], n1!.home);
  const took = await within(2000, 'the revocation to reach n2', async () => {
    const fresh = await refusedWith(async () => (await connect({ home: n2!.home, token: created.secret })).close());
    return fresh === 'ACP_ERR_AUTH_BAD_TOKEN' ? true : undefined;
  });
  t.log(`revoked on n2 after ${took} ms`);
  t.is(await refusedWith(() => open.ask('framework', { type: 'status' }, { timeoutMs: 3000 })), 'ACP_ERR_AUTH_BAD_TOKEN');
  const garbage = await cliError(['--token', 'acp_nope', 'status'], n1!.home);
  t.is(garbage.error?.code, 'ACP_ERR_AUTH_BAD_TOKEN');

  // A death watch on a node nobody knows is answered at once, with no link left retrying.
  const admin = await connect({ home: n1!.home });
  t.teardown(() => admin.close().catch(() => undefined));
  const started = Date.now();
  const terminated = await new Promise<Message>((resolve) => admin.watch('acp://lab/nosuch/framework', resolve));
  t.like(terminated, { type: 'terminated', path: 'acp://lab/nosuch/framework' });
  t.regex(String(terminated['reason']), /no-such-node/);
  t.true(Date.now() - started < 5000, `answered after ${Date.now() - started} ms`);
  const peers = await admin.ask<Message & { peers: { node: string }[] }>('agent', { type: 'agent.peers' });
  t.false(peers.peers.some((peer) => peer.node === 'nosuch'), 'no link kept for an unknown node');
});

test('acp node rm: the node disappears from acp nodes and its certificate is refused by every node within 2 s; rotate-keys replaces the keys on every live node without a restart', async (t) => {
  t.timeout(180_000);
  const [n1, n2, n3] = await startCluster(t, ['n1', 'n2', 'n3']);
  await eventually(async () => {
    const nodes = JSON.parse((await cliOk(['--json', 'nodes'], n2!.home)).stdout) as { node: string; state: string }[];
    return nodes.filter((node) => node.state === 'up').length === 3 ? true : undefined;
  }, 30_000, 'three nodes up');
  const n3cert = { cert: readFileSync(secretPath(n3!.home, 'node.crt'), 'utf8'), key: readFileSync(secretPath(n3!.home, 'node.key'), 'utf8') };
  const oldKey = apiKeyOf(n1!.home);
  t.is(await helloAs(n2!, n3cert, 'n3', oldKey), 'hello');

  const auditor = JSON.parse((await cliOk(['--json', 'token', 'api', 'create', '--role', 'operator'], n1!.home)).stdout) as { secret: string };
  const notAdmin = await cliError(['--token', auditor.secret, 'node', 'rm', 'n3'], n1!.home);
  t.is(notAdmin.error?.code, 'ACP_ERR_AUTH_FORBIDDEN');
  const self = await cliError(['node', 'rm', 'n1'], n1!.home);
  t.is(self.error?.code, 'ACP_ERR_TARGET_IS_SELF');
  t.regex(self.error?.message ?? '', /cannot remove itself/);

  await cliOk(['node', 'rm', 'n3'], n1!.home);
  const took = await within(2000, 'n3 refused by n1 and n2', async () => {
    const [on1, on2] = await Promise.all([helloAs(n1!, n3cert, 'n3', oldKey), helloAs(n2!, n3cert, 'n3', oldKey)]);
    return on1 !== 'hello' && on2 !== 'hello' ? true : undefined;
  });
  t.log(`n3's certificate refused everywhere after ${took} ms`);
  await eventually(async () => {
    const nodes = JSON.parse((await cliOk(['--json', 'nodes'], n2!.home)).stdout) as { node: string }[];
    return nodes.some((node) => node.node === 'n3') ? undefined : true;
  }, 10_000, 'n3 gone from acp nodes on n2');
  const removed = await askVia<Message & { record: { value: { name: string } } }>(n2!, 'cdb', { type: 'cdb.get', key: 'object/revocation/n3' });
  t.is(removed.record.value.name, 'n3');

  // New keys on n1 and n2 (n3 is out), without a restart; the old API key no longer opens anything.
  const pids = [n1!.pid, n2!.pid];
  const rotated = JSON.parse((await cliOk(['--json', 'cluster', 'rotate-keys'], n1!.home)).stdout) as { installed: string[]; failed: unknown[] };
  t.deepEqual(rotated, { type: 'agent.keys-rotated', installed: ['n1', 'n2'], failed: [] });
  const newKey = apiKeyOf(n1!.home);
  t.not(newKey, oldKey);
  t.is(apiKeyOf(n2!.home), newKey);
  t.is(readSecret(n2!.home, 'cluster.key'), readSecret(n1!.home, 'cluster.key'));
  const script = await issue('script-1', readSecret(n1!.home, 'ca.crt'), readSecret(n1!.home, 'ca.key'));
  t.is(await helloAs(n2!, script, 'script-1', oldKey), 'ACP_ERR_WIRE_BAD_KEY');
  t.is(await helloAs(n2!, script, 'script-1', newKey), 'hello');
  // The cluster still replicates, with the new keys, and nothing restarted.
  await cliOk(['cdb', 'put', 'object/network/after-rotation', '{"name":"after-rotation","type":"bridge"}'], n1!.home);
  await eventually(() => askVia(n2!, 'cdb', { type: 'cdb.get', key: 'object/network/after-rotation' }).catch(() => undefined), 15_000, 'a write on n1 to reach n2 after the rotation');
  t.deepEqual([n1!.pid, n2!.pid], pids);
  t.true(existsSync(n1!.home));
});

test('the exec: migration request is refused before it reaches the VMM, even with the admin API key, and creates nothing', async (t) => {
  const home = makeHome(t);
  await allRunning(await startDaemon(t, home));
  await cliOk(['system', 'create', 'vm1', '--driver', 'sim'], home);
  await cliOk(['system', 'start', 'vm1'], home);
  const marker = `${home}/pwned`;
  const result = await runCli(['ask', 'acp://lab/n1/hypervisor/vmm/vm1', JSON.stringify({ type: 'vmm.migrate', uri: `exec:touch ${marker}` })], home);
  t.is(result.code, 1);
  t.regex(result.stderr, /ACP_ERR_AUTH_FORBIDDEN/);
  t.regex(result.stderr, /operator may not send 'vmm\.migrate'/);
  t.false(existsSync(marker));
  const status = JSON.parse((await cliOk(['--json', 'status'], home)).stdout) as { forbidden: number };
  t.true(status.forbidden >= 1, 'the refusal is counted in acp status');
});
