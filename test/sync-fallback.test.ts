import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import type { SyncStatus } from '../actors/cdb/sync-node.js';
import { startDetached } from '../cli/control.js';
import { connect } from '../node/client.js';
import { initNode } from './helpers/agent.js';
import { makeHome, runCli } from './helpers/node.js';

test('a node that cannot join its multicast group syncs by unicast, and says so in the log and in acp status', async (t) => {
  const node = await initNode(t, 'n1');
  // 192.0.2.1 (TEST-NET-1) is no interface of this machine: the join fails.
  await startDetached({ home: node.home, faults: false }, ['--multicast-if', '192.0.2.1']);
  const client = await connect({ home: node.home });
  t.teardown(() => client.close());
  const status = await client.ask<SyncStatus>('cdb', { type: 'cdb.sync.status' });
  t.is(status.mode, 'unicast');
  t.is(status.multicast, null);
  t.regex(status.fallbackReason ?? '', /cannot join multicast group 239\.\d+\.\d+\.\d+:5460 on 192\.0\.2\.1/);
  const shown = await runCli(['status'], node.home);
  t.is(shown.code, 0);
  t.regex(shown.stdout, /sync\s+unicast over the agent to 0 peer\(s\) \(multicast unavailable: cannot join multicast group/);
  const log = readFileSync(join(node.home, 'log', 'acpd.log'), 'utf8');
  t.regex(log, /ACP_ERR_SYNC_NO_MULTICAST/);
});

test('acp status on a node in no cluster says sync is off; its CDB refuses sync traffic naming why', async (t) => {
  const home = makeHome(t);
  await startDetached({ home, faults: false }, []);
  const shown = await runCli(['status'], home);
  t.regex(shown.stdout, /sync\s+off \(this node belongs to no cluster\)/);
  const refused = await runCli(['--json', 'ask', 'cdb', '{"type":"cdb.sync.status"}'], home);
  t.is(refused.code, 1);
  t.regex(refused.stdout, /ACP_ERR_SYNC_NOT_PEER.*belongs to no cluster/);
});

test('bad sync flags are usage errors naming what is expected', async (t) => {
  const home = makeHome(t);
  for (const [flag, value, expected] of [
    ['--multicast', '10.0.0.1:5460', /--multicast must be an IPv4 multicast group/],
    ['--multicast', '239.1.1.1', /--multicast must be HOST:PORT/],
    ['--peers', '10.0.0.1:7480,nonsense', /each address in --peers must be HOST:PORT/],
    ['--gateway', 'host:99999', /each address in --gateway must be HOST:PORT/],
  ] as const) {
    const result = await runCli(['up', flag, value], home);
    t.is(result.code, 2, `${flag} ${value}`);
    t.regex(result.stderr, expected);
  }
});
