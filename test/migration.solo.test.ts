/**
 * Migration between two real nodes in network namespaces: a real QEMU guest moved live (its own
 * uptime, printed on its console, goes on) over TLS (the target's link is captured: no QEMU
 * migration stream in the clear), a simulated one by state transfer, and a refusal for a disk off
 * a shared pool.
 */
import { execFileSync, spawn } from 'node:child_process';
import type { SystemMeta } from '../actors/hypervisor/index.js';
import { guestImage, GUEST_UPTIME_PREFIX } from '../adapters/guest-image.js';
import type { Message } from '../runtime/messages.js';
import { Harness, harnessAvailable } from '../node/harness/index.js';
import { eventually } from './helpers/node.js';

const available = harnessAvailable();
const image = guestImage();
const missing = available.ok ? guestMissing() : available.why;

/**
 * A packet capture on a namespace's eth0 (AF_PACKET, Python's standard library: no tcpdump
 * needed): per TCP flow other than the agent's, its byte count and first 64 KiB. On SIGTERM it
 * prints, per flow, the bytes, the first 16 in hex, and whether QEMU's migration magic appears.
 */
const SNIFFER = `
import json, signal, socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))
s.bind(('eth0', 0))
flows = {}
def done(*_):
    print(json.dumps([{'flow': k, 'bytes': f[0], 'head': f[1][:16].hex(), 'magic': b'QEVM' in f[1]} for k, f in flows.items()]), flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
print('ready', flush=True)
while True:
    pkt = s.recv(262144)
    if len(pkt) < 34 or pkt[12:14] != b'\\x08\\x00': continue
    ip = pkt[14:]
    if ip[9] != 6: continue
    ihl = (ip[0] & 15) * 4
    tcp = ip[ihl:struct.unpack('!H', ip[2:4])[0]]
    sport, dport = struct.unpack('!HH', tcp[:4])
    payload = tcp[(tcp[12] >> 4) * 4:]
    if not payload or 7480 in (sport, dport): continue
    f = flows.setdefault('%s:%d>%s:%d' % (socket.inet_ntoa(ip[12:16]), sport, socket.inet_ntoa(ip[16:20]), dport), [0, b''])
    f[0] += len(payload)
    if len(f[1]) < 65536: f[1] += payload
`;
import { guestMissing, runsWhen } from './helpers/requires.js';

interface Flow {
  flow: string;
  bytes: number;
  head: string;
  magic: boolean;
}

/** Starts SNIFFER in namespace `ns`; `stop()` ends it and returns the flows it saw. */
async function sniff(ns: string): Promise<{ stop: () => Promise<Flow[]> }> {
  const child = spawn('ip', ['netns', 'exec', ns, 'python3', '-c', SNIFFER], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await eventually(() => (out.includes('ready') ? true : child.exitCode !== null ? Promise.reject(new Error(`the sniffer exited: ${err}`)) : undefined), 10_000, 'the sniffer to start');
  return {
    async stop() {
      child.kill('SIGTERM');
      await exited;
      const line = out.split('\n').find((text) => text.startsWith('['));
      if (!line) throw new Error(`the sniffer printed no flows: ${err}`);
      return JSON.parse(line) as Flow[];
    },
  };
}

let python: string | undefined;
try {
  execFileSync('python3', ['-c', 'import socket; socket.AF_PACKET'], { stdio: 'ignore' });
} catch {
  python = 'python3 with AF_PACKET sockets';
}

const uptimes = (text: string): number[] =>
  text
    .split('\n')
    .filter((line) => line.startsWith(GUEST_UPTIME_PREFIX))
    .map((line) => Number(line.slice(GUEST_UPTIME_PREFIX.length + 1)));

runsWhen(missing)(`a running QEMU guest migrates live between two nodes and its uptime goes on; a sim system moves by state transfer${missing ? ` (skipped: ${missing})` : ''}`, async (t) => {
  t.timeout(240_000);
  const h = await Harness.start({ nodes: ['n1', 'n2'] });
  t.teardown(() => h.teardown());
  await h.waitSynced(60_000);
  const cli = async (node: string, args: string[]) => {
    const result = await h.cli(node, args, 120_000);
    if (result.code !== 0) throw new Error(`acp ${args.join(' ')} on ${node} exited ${result.code}: ${result.stderr.trim()}`);
    return result.stdout;
  };
  await cli('n1', ['system', 'create', 'g1', '--driver', 'qemu', '--memory', '256', '--kernel', image!.kernel, '--initrd', image!.initrd, '--cmdline', image!.cmdline]);
  await cli('n1', ['system', 'create', 's1', '--driver', 'sim']);
  await cli('n1', ['system', 'start', 'g1']);
  await cli('n1', ['system', 'start', 's1']);
  // Up for a few seconds on n1 before it moves.
  const before = await eventually(async () => {
    const seen = uptimes(await cli('n1', ['system', 'console', 'g1']));
    return seen.length > 0 && seen.at(-1)! >= 3 ? seen.at(-1)! : undefined;
  }, 90_000, 'the guest to be up 3 s on n1');

  const capture = python ? undefined : await sniff(h.node('n2').ns);
  const moved = JSON.parse(await cli('n1', ['--json', 'system', 'migrate', 'g1', '--to', 'n2'])) as SystemMeta & { from: string; to: string; ms: number };
  t.like(moved, { from: 'n1', to: 'n2', state: 'running', node: 'n2' });
  t.log(`live migration took ${moved.ms} ms`);
  if (capture) {
    // The guest's memory crossed n2's link: in TLS records, never as a plaintext QEMU stream.
    const flows = (await capture.stop()).filter((flow) => flow.flow.startsWith(`${h.node('n1').address}:`) && flow.bytes > 1024 * 1024);
    t.is(flows.length, 1, `one migration stream from n1: ${JSON.stringify(flows)}`);
    t.log(`migration stream ${flows[0]?.flow}: ${flows[0]?.bytes} bytes, first bytes ${flows[0]?.head}`);
    t.true(flows[0]?.head.startsWith('16030'), 'it opens with a TLS handshake record');
    t.false(flows[0]?.magic, 'no QEMU migration magic (QEVM) in the clear');
  } else {
    t.log(`the stream was not captured: no ${python}`);
  }
  // The console now comes from n2: the guest's own clock went on from where it was.
  const after = await eventually(async () => {
    const seen = uptimes(await cli('n1', ['system', 'console', 'g1']));
    return seen.length >= 2 ? seen : undefined;
  }, 30_000, 'uptime lines from the guest on n2');
  t.true(after[0]! >= before, `the first uptime on n2 (${after[0]}) is not below the last on n1 (${before}): the same guest, not a new boot`);
  t.true(after.at(-1)! > after[0]!, 'and it keeps counting');

  const n1 = await h.client('n1');
  const placed = await n1.ask<Message & { record: { value: { node?: string } } }>('cdb', { type: 'cdb.get', key: 'object/system/g1' });
  t.is(placed.record.value.node, 'n2', 'ownership switched in the CDB');
  const sourceState = await n1.ask<Message & { record: { value: SystemMeta } }>('cdb', { type: 'cdb.get', key: 'meta/system/g1@n1' });
  t.like(sourceState.record.value, { state: 'stopped', reason: 'migrated to n2' });

  // Asked on n2: the command finds where s1 runs (n1) and asks that node's hypervisor.
  const sim = JSON.parse(await cli('n2', ['--json', 'system', 'migrate', 's1', '--to', 'n2'])) as SystemMeta & { to: string };
  t.like(sim, { to: 'n2', state: 'running' });
  const listed = JSON.parse(await cli('n2', ['--json', 'system', 'ls'])) as { id: string; state: string; node: string }[];
  t.deepEqual(
    listed.map((row) => [row.id, row.state, row.node]),
    [
      ['g1', 'running', 'n2'],
      ['s1', 'running', 'n2'],
    ],
  );

  // A disk on a pool not marked shared: refused before anything moves.
  await n1.ask('cdb', { type: 'cdb.put', key: 'object/storage/pool/local', value: { name: 'local', type: 'dir', path: '/tmp/acp-migration-test-pool', shared: false } });
  // Written to the CDB as it is: acp system create refuses a sim system with disks (it has none), and a volume that is not there.
  await (await h.client('n2')).ask('cdb', { type: 'cdb.put', key: 'object/system/s2', value: { name: 's2', driver: 'sim', disks: [{ pool: 'local', volume: 'v1' }] } });
  await cli('n2', ['system', 'start', 's2']);
  const refused = await h.cli('n2', ['system', 'migrate', 's2', '--to', 'n1']);
  t.is(refused.code, 1);
  t.regex(refused.stderr, /ACP_ERR_SYSTEM_NOT_MIGRATABLE/);
  t.is(JSON.parse(await cli('n2', ['--json', 'system', 'ls'])).find((row: { id: string }) => row.id === 's2').state, 'running');

  await cli('n2', ['system', 'stop', 'g1', '--force']);
});
