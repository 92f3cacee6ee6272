/**
 * Live migration that cannot be hijacked, at the driver: two real QEMUs on this host, each with
 * its node's certificate from one cluster CA. The stream is TLS (no QEMU migration magic in the
 * clear, seen through a recording proxy), a third party that connects to the incoming port first
 * is refused while the real source still gets through, and a listener that is not the named node
 * never gets the guest: the source refuses it and keeps running.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as connectTcp, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as connectTls, createServer as createTlsServer } from 'node:tls';
import test from 'ava';
import type { GuestHandle, MigrationCredentials } from '../adapters/drivers/driver.js';
import { migrationUri, qemuDriver } from '../adapters/drivers/qemu.js';
import { guestImage, GUEST_UPTIME_PREFIX } from '../adapters/guest-image.js';
import { createCa, createCsr, signCsr } from '../adapters/pki.js';
import { systemObjectSchema } from '../actors/model.js';
import { guestFiles, vmmSchema } from '../actors/vmm/index.js';
import { homePaths } from '../runtime/config.js';
import { AcpError } from '../runtime/errors.js';
import { eventually } from './helpers/node.js';
import { systemNode } from './helpers/system.js';
import { guestMissing, runsWhen } from './helpers/requires.js';

const image = guestImage();
const missing = guestMissing();

/** QEMU's migration stream starts with this magic ('QEVM') when it is not encrypted. */
const QEMU_MAGIC = Buffer.from('QEVM', 'latin1');
const CAPTURE_BYTES = 64 * 1024;

const uptimes = (file: string): number[] =>
  (existsSync(file) ? readFileSync(file, 'utf8') : '')
    .split('\n')
    .filter((line) => line.startsWith(GUEST_UPTIME_PREFIX))
    .map((line) => Number(line.slice(GUEST_UPTIME_PREFIX.length + 1)));

interface Identity {
  certPem: string;
  keyPem: string;
}

async function issue(node: string, ca: { certPem: string; keyPem: string }): Promise<Identity> {
  const { csrPem, keyPem } = await createCsr(node);
  return { certPem: signCsr({ csrPem, caCertPem: ca.certPem, caKeyPem: ca.keyPem, node }), keyPem };
}

/** A node's home with its secrets where `acp init`/`acp join` put them. */
function home(root: string, node: string, caPem: string, identity: Identity): { home: string; credentials: MigrationCredentials } {
  const dir = join(root, node);
  const paths = homePaths(dir);
  mkdirSync(paths.secrets, { recursive: true, mode: 0o700 });
  writeFileSync(paths.caCert, caPem);
  writeFileSync(paths.nodeCert, identity.certPem);
  writeFileSync(paths.nodeKey, identity.keyPem, { mode: 0o600 });
  return { home: dir, credentials: { node, caCert: paths.caCert, cert: paths.nodeCert, key: paths.nodeKey } };
}

function prepared(homeDir: string, id: string): { consoleLog: string; runDir: string; accelerator: 'tcg' } {
  const files = guestFiles(homeDir, id);
  mkdirSync(join(files.consoleLog, '..'), { recursive: true, mode: 0o700 });
  mkdirSync(files.runDir, { recursive: true, mode: 0o700 });
  return { ...files, accelerator: 'tcg' };
}

/** A TCP proxy to `port` that keeps the first bytes each way and counts the rest. */
async function recordingProxy(port: number): Promise<{ server: Server; port: number; sent: Buffer[]; received: Buffer[]; bytes: () => number }> {
  const sent: Buffer[] = [];
  const received: Buffer[] = [];
  let total = 0;
  const keep = (into: Buffer[], chunk: Buffer) => {
    total += chunk.length;
    const have = into.reduce((sum, part) => sum + part.length, 0);
    if (have < CAPTURE_BYTES) into.push(chunk.subarray(0, CAPTURE_BYTES - have));
  };
  const server = createServer((client: Socket) => {
    const upstream = connectTcp(port, '127.0.0.1');
    client.on('data', (chunk: Buffer) => keep(sent, chunk));
    upstream.on('data', (chunk: Buffer) => keep(received, chunk));
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('the proxy has no port');
  return { server, port: address.port, sent, received, bytes: () => total };
}

/** Connects, writes `bytes`, and resolves with what came back before the peer closed (or after `ms`). */
function poke(port: number, bytes: Buffer, ms = 3000): Promise<{ closed: boolean; answer: Buffer }> {
  return new Promise((resolve) => {
    const socket = connectTcp(port, '127.0.0.1');
    const parts: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ closed: false, answer: Buffer.concat(parts) });
    }, ms);
    socket.on('connect', () => socket.write(bytes));
    socket.on('data', (chunk: Buffer) => parts.push(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ closed: true, answer: Buffer.concat(parts) });
    });
  });
}

/** A TLS client with `identity`: resolves true if the target let it talk (it must not). */
function tlsIntruder(port: number, caPem: string, identity: Identity): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connectTls({ port, host: '127.0.0.1', ca: caPem, cert: identity.certPem, key: identity.keyPem, rejectUnauthorized: false, minVersion: 'TLSv1.2' });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(true);
    }, 3000);
    socket.on('secureConnect', () => socket.write(Buffer.concat([QEMU_MAGIC, Buffer.from([0, 0, 0, 3])])));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}

test('migrationUri builds tcp: URIs from an address only; anything else is refused', (t) => {
  t.is(migrationUri({ host: '10.0.0.2', port: 4444 }), 'tcp:10.0.0.2:4444');
  t.is(migrationUri({ host: 'fd00::2', port: 4444 }), 'tcp:[fd00::2]:4444');
  t.is(migrationUri({ host: 'n2.lab.example', port: 1 }), 'tcp:n2.lab.example:1');
  for (const host of ['exec:touch /tmp/x', 'n2:4444', '10.0.0.2,tls-creds=x', '', 'unix:/tmp/sock', 'a b']) {
    const error = t.throws(() => migrationUri({ host, port: 4444 }));
    t.is((error as AcpError).code, 'ACP_ERR_SCHEMA_REJECTED', host);
  }
  t.is((t.throws(() => migrationUri({ host: '10.0.0.2', port: 70_000 })) as AcpError).code, 'ACP_ERR_SCHEMA_REJECTED');
});

runsWhen(missing)(
  `QEMU migrates over TLS with the cluster's certificates: no plaintext stream, a third party is refused, an impostor target never gets the guest${missing ? ` (skipped: ${missing})` : ''}`,
  async (t) => {
    t.timeout(180_000);
    const root = mkdtempSync(join(tmpdir(), 'acp-migration-tls-'));
    const guests: GuestHandle[] = [];
    const servers: Server[] = [];
    t.teardown(async () => {
      for (const server of servers) server.close();
      await Promise.all(guests.map((guest) => guest.stop(false, 0).catch(() => undefined)));
      rmSync(root, { recursive: true, force: true });
    });
    const ca = await createCa('lab');
    const [n1, n2, n3] = await Promise.all([issue('n1', ca), issue('n2', ca), issue('n3', ca)]);
    const stranger = await issue('n1', await createCa('lab'));
    const source = home(root, 'n1', ca.certPem, n1);
    const target = home(root, 'n2', ca.certPem, n2);
    const spec = systemObjectSchema.parse({ name: 'g1', driver: 'qemu', memoryMiB: 256, boot: { kernel: image!.kernel, initrd: image!.initrd, cmdline: image!.cmdline } });

    const sourcePaths = prepared(source.home, 'g1');
    const running = await qemuDriver.start('g1', spec, sourcePaths);
    guests.push(running);
    const before = await eventually(() => {
      const seen = uptimes(sourcePaths.consoleLog);
      return seen.length > 0 && seen.at(-1)! >= 2 ? seen.at(-1)! : undefined;
    }, 90_000, 'the guest to be up 2 s on n1');

    // An impostor at the address (a cluster node, but not n2): the source refuses it and runs on.
    const impostor = createTlsServer({ cert: n3.certPem, key: n3.keyPem, ca: ca.certPem, requestCert: true, rejectUnauthorized: false }, (socket) => socket.on('error', () => undefined));
    servers.push(impostor);
    await new Promise<void>((resolve) => impostor.listen(0, '127.0.0.1', resolve));
    const impostorPort = (impostor.address() as { port: number }).port;
    const refused = await t.throwsAsync(running.migrate({ node: 'n2', address: { host: '127.0.0.1', port: impostorPort } }, source.credentials));
    t.is((refused as AcpError).code, 'ACP_ERR_VMM_FAILED');
    t.regex(refused!.message, /hostname n2|certificate/i, 'refused for its certificate');
    await running.awaitRunning(5000);
    t.pass('the guest still runs on n1 after refusing the impostor');

    const targetPaths = prepared(target.home, 'g1');
    const incoming = await qemuDriver.incoming('g1', spec, targetPaths, { host: '127.0.0.1', from: 'n1' }, target.credentials, null);
    guests.push(incoming.handle);
    t.truthy(incoming.address);
    const port = incoming.address!.port;
    t.false(existsSync(join(targetPaths.runDir, 'migration-tls-server')), 'the credentials directory goes once QEMU has read it');

    // Third parties first: plaintext QEMU magic, a certificate from another CA, a cluster node that is not the source.
    const plain = await poke(port, Buffer.concat([QEMU_MAGIC, Buffer.from([0, 0, 0, 3]), Buffer.alloc(64)]));
    t.true(plain.closed, 'a plaintext migration stream is cut off');
    t.false(plain.answer.includes(QEMU_MAGIC));
    t.false(await tlsIntruder(port, ca.certPem, stranger), 'a certificate from another CA is refused');
    t.false(await tlsIntruder(port, ca.certPem, n3), 'another node of the cluster is refused (only n1 may send this guest)');

    // The real source, through a proxy that records what crosses the wire.
    const proxy = await recordingProxy(port);
    servers.push(proxy.server);
    await running.migrate({ node: 'n2', address: { host: '127.0.0.1', port: proxy.port } }, source.credentials);
    await incoming.handle.awaitRunning(60_000);
    const sent = Buffer.concat(proxy.sent);
    const received = Buffer.concat(proxy.received);
    t.log(`${proxy.bytes()} bytes crossed the proxy; first bytes from the source ${sent.subarray(0, 8).toString('hex')}`);
    t.true(proxy.bytes() > 1024 * 1024, 'the guest went through the proxy');
    t.is(sent[0], 0x16, 'the source opens with a TLS handshake record');
    t.is(received[0], 0x16, 'the target answers with one');
    t.false(sent.includes(QEMU_MAGIC), 'no QEMU migration magic in the clear from the source');
    t.false(received.includes(QEMU_MAGIC));

    // The same guest: its uptime goes on at the target.
    const after = await eventually(() => {
      const seen = uptimes(targetPaths.consoleLog);
      return seen.length >= 2 ? seen : undefined;
    }, 30_000, 'uptime lines from the guest on n2');
    t.true(after[0]! >= before, `the first uptime on n2 (${after[0]}) is not below the last on n1 (${before})`);
  },
);

test('the VMM schema takes no URI and no path: a uri, exec:, or a path field is refused', (t) => {
  const refused = [
    { type: 'vmm.migrate', uri: 'exec:touch /tmp/x' },
    { type: 'vmm.migrate', target: { node: 'n2', address: { host: 'exec:touch /tmp/x', port: 1 } } },
    { type: 'vmm.migrate', target: { node: 'n2', address: { host: '10.0.0.2', port: 1 }, uri: 'exec:touch /tmp/x' } },
    { type: 'vmm.migrate', target: { node: 'exec:touch /tmp/x' } },
    { type: 'vmm.migrate', target: { node: 'n2', address: { host: '10.0.0.2', port: 0 } } },
    { type: 'vmm.start', spec: { name: 'g1', driver: 'sim' }, consoleLog: '/etc/passwd', runDir: '/tmp' },
    { type: 'vmm.incoming', spec: { name: 'g1', driver: 'sim' }, host: '10.0.0.2', from: 'n1', transferred: null, runDir: '/tmp' },
    { type: 'vmm.incoming', spec: { name: 'g1', driver: 'sim' }, host: 'exec:touch /tmp/x', from: 'n1', transferred: null },
  ];
  for (const message of refused) t.false(vmmSchema.safeParse(message).success, JSON.stringify(message));
  t.true(vmmSchema.safeParse({ type: 'vmm.migrate', target: { node: 'n2', address: { host: 'fd00::2', port: 49152 } } }).success);
});

test(`a VMM refuses vmm.migrate (a uri, exec:) from a client with the node's API key before reading it, and nothing runs${missing ? ' (sim guest: ' + missing + ')' : ''}`, async (t) => {
  t.timeout(120_000);
  const { api } = await systemNode(t);
  const driver = missing ? { driver: 'sim' } : { driver: 'qemu', memoryMiB: 128, boot: { kernel: image!.kernel, initrd: image!.initrd, cmdline: image!.cmdline } };
  await api.ask('cdb', { type: 'cdb.put', key: 'object/system/vm1', value: { name: 'vm1', ...driver } });
  await api.ask('hypervisor', { type: 'system.start', id: 'vm1' }, { timeoutMs: 90_000 });
  t.teardown(() => api.ask('hypervisor', { type: 'system.stop', id: 'vm1', force: true }).then(() => undefined, () => undefined));
  const marker = join(tmpdir(), `acp-hijack-${process.pid}-${Date.now()}`);
  const attempts = [
    { type: 'vmm.migrate', uri: `exec:touch ${marker}` },
    { type: 'vmm.migrate', target: { node: 'n2', address: { host: `exec:touch ${marker}`, port: 4444 } } },
    { type: 'vmm.incoming', spec: { name: 'vm1', driver: 'sim' }, host: '127.0.0.1', from: 'n2', transferred: null, consoleLog: marker, runDir: marker },
  ];
  for (const message of attempts) {
    const error = await t.throwsAsync(api.ask('hypervisor/vmm/vm1', message, { timeoutMs: 15_000 }));
    // Only the node's hypervisor may talk to a VMM: refused before its fields are even read.
    t.is((error as AcpError).code, 'ACP_ERR_AUTH_FORBIDDEN', JSON.stringify(message));
  }
  await new Promise((resolve) => setTimeout(resolve, 500));
  t.false(existsSync(marker), 'nothing from the message reached a shell or a path');
  const status = await api.ask<{ type: string; systems: { state: string }[] }>('hypervisor', { type: 'system.status', id: 'vm1' });
  t.is(status.systems[0]?.state, 'running', 'the guest runs on, untouched');
});
