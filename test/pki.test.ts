import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer, type TLSSocket } from 'node:tls';
import test, { type ExecutionContext } from 'ava';
import forge from 'node-forge';
import { certificateExpiry, certificateNode, createCa, createCsr, fingerprint, generateKeyPair, signCsr, verifyIssuedBy, writePublic, writeSecret } from '../adapters/pki.js';
import { decodeToken, encodeToken, mintToken, TokenLedger } from '../adapters/join-tokens.js';
import { AcpError } from '../runtime/errors.js';

const DAY_MS = 24 * 60 * 60 * 1000;

// One CA for the tests that only need "a CA", made lazily so it cannot overlap the serial test.
let sharedCaPromise: Promise<{ certPem: string; keyPem: string }> | undefined;
function sharedCa(): Promise<{ certPem: string; keyPem: string }> {
  sharedCaPromise ??= createCa('test');
  return sharedCaPromise;
}

async function issue(node: string, ca: { certPem: string; keyPem: string }, extra: { notBefore?: Date; notAfter?: Date } = {}) {
  const { csrPem, keyPem } = await createCsr(node);
  const certPem = signCsr({ csrPem, caCertPem: ca.certPem, caKeyPem: ca.keyPem, node, ...extra });
  return { certPem, keyPem };
}

function tempDir(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'acp-pki-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function mode(file: string): number {
  return statSync(file).mode & 0o777;
}

// Serial, so no other test's synchronous forge signing competes for the event loop meanwhile.
test.serial('generateKeyPair leaves the event loop running', async (t) => {
  let ticks = 0;
  const timer = setInterval(() => ticks++, 10);
  try {
    // A few in a row, so a fast machine still spans several timer periods; a blocking version would see 0 ticks.
    for (let i = 0; i < 4; i++) {
      const keys = await generateKeyPair();
      t.regex(keys.privateKeyPem, /^-----BEGIN PRIVATE KEY-----/);
      t.regex(keys.publicKeyPem, /^-----BEGIN PUBLIC KEY-----/);
    }
  } finally {
    clearInterval(timer);
  }
  t.true(ticks >= 3, `only ${ticks} timer ticks during key generation`);
});

test('CA, CSR and signing round trip', async (t) => {
  const ca = await sharedCa();
  const caCert = new X509Certificate(ca.certPem);
  t.true(caCert.ca);
  t.is(certificateNode(ca.certPem), 'acp-ca-test');
  t.true(verifyIssuedBy(ca.certPem, ca.certPem));
  t.true(certificateExpiry(ca.certPem).getTime() > Date.now() + 9 * 365 * DAY_MS);

  const { certPem } = await issue('node-a', ca);
  t.true(verifyIssuedBy(certPem, ca.certPem));
  t.is(certificateNode(certPem), 'node-a');
  const leaf = new X509Certificate(certPem);
  t.false(leaf.ca);
  t.is(leaf.subjectAltName, 'DNS:node-a');
  const expiry = certificateExpiry(certPem).getTime();
  t.true(expiry > Date.now() + 364 * DAY_MS && expiry < Date.now() + 366 * DAY_MS);

  const forgeLeaf = forge.pki.certificateFromPem(certPem);
  const extKeyUsage = forgeLeaf.getExtension('extKeyUsage') as { serverAuth?: boolean; clientAuth?: boolean } | undefined;
  t.true(extKeyUsage?.serverAuth);
  t.true(extKeyUsage?.clientAuth);
  const keyUsage = forgeLeaf.getExtension('keyUsage') as { digitalSignature?: boolean; keyEncipherment?: boolean; keyCertSign?: boolean } | undefined;
  t.true(keyUsage?.digitalSignature);
  t.true(keyUsage?.keyEncipherment);
  t.falsy(keyUsage?.keyCertSign);
  t.is(forgeLeaf.siginfo.algorithmOid, forge.pki.oids['sha256WithRSAEncryption']);
});

test('createCsr uses a given key pair', async (t) => {
  const keys = await generateKeyPair();
  const { csrPem, keyPem } = await createCsr('node-k', keys);
  t.is(keyPem, keys.privateKeyPem);
  const csrKey = forge.pki.certificationRequestFromPem(csrPem).publicKey as forge.pki.rsa.PublicKey;
  t.is(csrKey.n.toString(16), forge.pki.publicKeyFromPem(keys.publicKeyPem).n.toString(16));
});

test('a certificate from another CA of the same name does not verify', async (t) => {
  const ca = await sharedCa();
  const impostor = await createCa('test');
  const { certPem } = await issue('node-b', impostor);
  t.true(verifyIssuedBy(certPem, impostor.certPem));
  t.false(verifyIssuedBy(certPem, ca.certPem));
});

test('an expired certificate does not verify', async (t) => {
  const ca = await sharedCa();
  const now = Date.now();
  const { certPem } = await issue('node-c', ca, { notBefore: new Date(now - 3 * DAY_MS), notAfter: new Date(now - DAY_MS) });
  t.false(verifyIssuedBy(certPem, ca.certPem));
  t.true(certificateExpiry(certPem).getTime() < now);
});

test('a CSR for another node is refused', async (t) => {
  const ca = await sharedCa();
  const { csrPem } = await createCsr('node-x');
  const error = t.throws(() => signCsr({ csrPem, caCertPem: ca.certPem, caKeyPem: ca.keyPem, node: 'node-y' }), { instanceOf: AcpError });
  t.is(error?.code, 'ACP_ERR_PKI_BAD_CSR');
});

test('a CSR whose subject was changed after signing is refused', async (t) => {
  const ca = await sharedCa();
  const { csrPem } = await createCsr('node-x');
  const csr = forge.pki.certificationRequestFromPem(csrPem);
  csr.setSubject([{ name: 'commonName', value: 'node-y' }]);
  csr.certificationRequestInfo = null; // re-encode the new subject, keep the old signature
  const tampered = forge.pki.certificationRequestToPem(csr);
  const error = t.throws(() => signCsr({ csrPem: tampered, caCertPem: ca.certPem, caKeyPem: ca.keyPem, node: 'node-y' }), { instanceOf: AcpError });
  t.is(error?.code, 'ACP_ERR_PKI_BAD_CSR');
  t.regex(error?.message ?? '', /not signed by its own key/);
});

test('garbage certificates and CSRs are refused with PKI codes', async (t) => {
  const ca = await sharedCa();
  t.is(t.throws(() => fingerprint('not a cert'), { instanceOf: AcpError })?.code, 'ACP_ERR_PKI_BAD_CERT');
  t.is(t.throws(() => signCsr({ csrPem: 'nope', caCertPem: ca.certPem, caKeyPem: ca.keyPem, node: 'n' }), { instanceOf: AcpError })?.code, 'ACP_ERR_PKI_BAD_CSR');
  const other = await generateKeyPair();
  const { csrPem } = await createCsr('n');
  const mismatch = t.throws(() => signCsr({ csrPem, caCertPem: ca.certPem, caKeyPem: other.privateKeyPem, node: 'n' }), { instanceOf: AcpError });
  t.is(mismatch?.code, 'ACP_ERR_PKI_BAD_CERT');
});

test('fingerprint is the SHA-256 of the DER, lower-case hex without colons', async (t) => {
  const ca = await sharedCa();
  const expected = new X509Certificate(ca.certPem).fingerprint256.replaceAll(':', '').toLowerCase();
  t.is(fingerprint(ca.certPem), expected);
  t.regex(fingerprint(ca.certPem), /^[0-9a-f]{64}$/);
});

test('join tokens survive encode and decode; garbage is refused', async (t) => {
  const ca = await sharedCa();
  const token = mintToken('test', fingerprint(ca.certPem), 60_000, 1_000);
  t.is(token.expiresAt, 61_000);
  t.regex(token.id, /^[0-9a-f]{32}$/);
  t.is(Buffer.from(token.secret, 'base64url').length, 32);
  const text = encodeToken(token);
  t.true(text.startsWith('acpjoin1.'));
  t.deepEqual(decodeToken(text), token);

  const payload = (value: unknown) => `acpjoin1.${Buffer.from(JSON.stringify(value)).toString('base64url')}`;
  const garbage = [
    '',
    'hello',
    text.slice('acpjoin1.'.length),
    'acpjoin2.' + text.slice('acpjoin1.'.length),
    'acpjoin1.!!!!',
    `acpjoin1.${Buffer.from('{not json').toString('base64url')}`,
    payload([1, 2]),
    payload(null),
    payload({ ...token, secret: undefined }),
    payload({ ...token, expiresAt: 'soon' }),
    payload({ ...token, caFingerprint: 'AB' }),
    text.slice(0, -5),
  ];
  for (const input of garbage) {
    const error = t.throws(() => decodeToken(input), { instanceOf: AcpError }, `accepted ${JSON.stringify(input)}`);
    t.is(error?.code, 'ACP_ERR_PKI_BAD_TOKEN');
  }
});

test('the ledger redeems a token once', (t) => {
  const file = join(tempDir(t), 'tokens.json');
  const ledger = new TokenLedger(file);
  const token = mintToken('test', 'a'.repeat(64), 60_000);
  ledger.add(token);
  t.is(mode(file), 0o600);
  t.false(readFileSync(file, 'utf8').includes(token.secret));

  t.notThrows(() => ledger.consume(token.id, token.secret));
  const again = t.throws(() => new TokenLedger(file).consume(token.id, token.secret), { instanceOf: AcpError });
  t.is(again?.code, 'ACP_ERR_PKI_TOKEN_USED');
  t.is(mode(file), 0o600);
  t.false(readFileSync(file, 'utf8').includes(token.secret));
});

test('the ledger refuses expired tokens, wrong secrets and unknown ids', (t) => {
  const file = join(tempDir(t), 'tokens.json');
  const ledger = new TokenLedger(file);
  const now = Date.now();
  const token = mintToken('test', 'a'.repeat(64), 60_000, now);
  ledger.add(token);

  const codeOf = (fn: () => void) => t.throws(fn, { instanceOf: AcpError })?.code;
  t.is(codeOf(() => ledger.consume(token.id, token.secret, now + 60_000)), 'ACP_ERR_PKI_TOKEN_EXPIRED');
  t.is(codeOf(() => ledger.consume(token.id, mintToken('test', 'a'.repeat(64), 1).secret, now)), 'ACP_ERR_PKI_BAD_TOKEN');
  t.is(codeOf(() => ledger.consume(token.id, '', now)), 'ACP_ERR_PKI_BAD_TOKEN');
  t.is(codeOf(() => ledger.consume('0'.repeat(32), token.secret, now)), 'ACP_ERR_PKI_BAD_TOKEN');
  t.is(codeOf(() => ledger.consume('__proto__', token.secret, now)), 'ACP_ERR_PKI_BAD_TOKEN');
  // None of the failures used the token up.
  t.notThrows(() => ledger.consume(token.id, token.secret, now + 1));
});

test('the ledger prunes tokens expired more than a day ago', (t) => {
  const file = join(tempDir(t), 'tokens.json');
  const ledger = new TokenLedger(file);
  const old = mintToken('test', 'a'.repeat(64), 1_000, Date.now() - 2 * DAY_MS);
  ledger.add(old);
  ledger.add(mintToken('test', 'a'.repeat(64), 60_000));
  const stored = JSON.parse(readFileSync(file, 'utf8')) as { tokens: Record<string, unknown> };
  t.false(old.id in stored.tokens);
  t.is(Object.keys(stored.tokens).length, 1);
});

test('a corrupt ledger is reported, not silently reset', (t) => {
  const file = join(tempDir(t), 'tokens.json');
  writeSecret(file, '{"tokens": 3}');
  const error = t.throws(() => new TokenLedger(file).consume('0'.repeat(32), 'x'), { instanceOf: AcpError });
  t.is(error?.code, 'ACP_ERR_PKI_LEDGER');
});

test('writeSecret and writePublic set their modes and replace content', (t) => {
  const dir = tempDir(t);
  const secret = join(dir, 'secrets', 'node.key');
  writeSecret(secret, 'one');
  writeSecret(secret, 'two');
  t.is(readFileSync(secret, 'utf8'), 'two');
  t.is(mode(secret), 0o600);
  t.is(mode(join(dir, 'secrets')), 0o700);
  const cert = join(dir, 'node.crt');
  writePublic(cert, 'cert');
  t.is(mode(cert), 0o644);
});

test('certificates from this module carry a TLS 1.3 mutually authenticated handshake', async (t) => {
  const ca = await sharedCa();
  const [server, client] = await Promise.all([issue('node-srv', ca), issue('node-cli', ca)]);

  const listener = createServer({
    key: server.keyPem,
    cert: server.certPem,
    ca: [ca.certPem],
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
  });
  t.teardown(() => listener.close());
  const serverSide = new Promise<{ authorized: boolean; peer: string; protocol: string | null }>((resolve) => {
    listener.once('secureConnection', (socket: TLSSocket) => {
      resolve({ authorized: socket.authorized, peer: String(socket.getPeerCertificate().subject.CN), protocol: socket.getProtocol() });
      socket.end('hello');
    });
  });
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  const { port } = listener.address() as AddressInfo;

  const clientSide = await new Promise<{ authorized: boolean; peer: string; data: string }>((resolve, reject) => {
    const socket = connect({
      host: '127.0.0.1',
      port,
      key: client.keyPem,
      cert: client.certPem,
      ca: [ca.certPem],
      minVersion: 'TLSv1.3',
      checkServerIdentity: () => undefined,
    });
    let data = '';
    let authorized = false;
    let peer = '';
    socket.on('secureConnect', () => {
      authorized = socket.authorized;
      peer = String(socket.getPeerCertificate().subject.CN);
    });
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (data += chunk));
    socket.on('end', () => resolve({ authorized, peer, data }));
    socket.on('error', reject);
  });

  t.true(clientSide.authorized);
  t.is(clientSide.peer, 'node-srv');
  t.is(clientSide.data, 'hello');
  const accepted = await serverSide;
  t.true(accepted.authorized);
  t.is(accepted.peer, 'node-cli');
  t.is(accepted.protocol, 'TLSv1.3');
});
