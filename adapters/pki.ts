import { createHash, generateKeyPair as generateNodeKeyPair, randomBytes, X509Certificate } from 'node:crypto';
import { chmodSync, closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import forge from 'node-forge';
import { AcpError, errorMessage } from '../runtime/errors.js';
import { assertName } from '../runtime/path.js';

/**
 * The cluster's PKI: a self-signed CA per cluster, one RSA-2048 leaf certificate per node (used as
 * both TLS server and client), and the files they are kept in (join tokens: join-tokens.ts).
 * node-forge builds certificates and CSRs; node's crypto makes keys and checks certificates.
 */

const DAY_MS = 24 * 60 * 60 * 1000;
const CLOCK_SKEW_MS = 60 * 1000;
const CA_VALID_DAYS = 3650;
const LEAF_VALID_DAYS = 365;
const MIN_RSA_BITS = 2048;

export interface KeyPair {
  privateKeyPem: string;
  publicKeyPem: string;
}

/** An RSA-2048 key pair, generated on libuv's thread pool so the event loop keeps running. */
export function generateKeyPair(): Promise<KeyPair> {
  return new Promise((resolve, reject) => {
    generateNodeKeyPair(
      'rsa',
      {
        modulusLength: MIN_RSA_BITS,
        publicKeyEncoding: { type: 'spki', format: 'pem' },
        privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
      },
      (error, publicKeyPem, privateKeyPem) => {
        if (error) reject(AcpError.from(error));
        else resolve({ privateKeyPem, publicKeyPem });
      },
    );
  });
}

/** A self-signed CA for the cluster: CN `acp-ca-<cluster>`, 10 years unless told otherwise. */
export async function createCa(cluster: string, options: { validDays?: number } = {}): Promise<{ certPem: string; keyPem: string }> {
  assertName(cluster, 'cluster');
  const keys = await generateKeyPair();
  const key = forgePrivateKey(keys.privateKeyPem);
  const cert = forge.pki.createCertificate();
  const subject = [{ name: 'commonName', value: `acp-ca-${cluster}` }];
  cert.publicKey = forge.pki.publicKeyFromPem(keys.publicKeyPem);
  cert.serialNumber = randomSerial();
  setValidity(cert, undefined, undefined, options.validDays ?? CA_VALID_DAYS);
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(key, forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem: keys.privateKeyPem };
}

/** A CSR whose CN is the node's name, with a fresh key unless one is given. */
export async function createCsr(node: string, key?: KeyPair): Promise<{ csrPem: string; keyPem: string }> {
  assertName(node, 'node');
  const keys = key ?? (await generateKeyPair());
  const csr = forge.pki.createCertificationRequest();
  csr.publicKey = forge.pki.publicKeyFromPem(keys.publicKeyPem);
  csr.setSubject([{ name: 'commonName', value: node }]);
  csr.sign(forgePrivateKey(keys.privateKeyPem), forge.md.sha256.create());
  return { csrPem: forge.pki.certificationRequestToPem(csr), keyPem: keys.privateKeyPem };
}

export interface SignCsrInput {
  csrPem: string;
  caCertPem: string;
  caKeyPem: string;
  node: string;
  validDays?: number;
  /** Overrides for tests (e.g. an already expired certificate). */
  notBefore?: Date;
  notAfter?: Date;
}

/** Issues the node's leaf certificate from its CSR, after checking the CSR is really the node's. */
export function signCsr(input: SignCsrInput): string {
  assertName(input.node, 'node');
  const csr = parseCsr(input.csrPem);
  const publicKey = checkCsr(csr, input.node);
  const { caCert, caKey } = parseCa(input.caCertPem, input.caKeyPem);
  const cert = forge.pki.createCertificate();
  cert.publicKey = publicKey;
  cert.serialNumber = randomSerial();
  setValidity(cert, input.notBefore, input.notAfter, input.validDays ?? LEAF_VALID_DAYS);
  cert.setSubject([{ name: 'commonName', value: input.node }]);
  cert.setIssuer(caCert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
    { name: 'subjectAltName', altNames: [{ type: 2, value: input.node }] },
    { name: 'subjectKeyIdentifier' },
    // forge's `keyIdentifier: true` would use the leaf's own key, so pass the CA's explicitly.
    { name: 'authorityKeyIdentifier', keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
  ]);
  cert.sign(caKey, forge.md.sha256.create());
  return forge.pki.certificateToPem(cert);
}

/** The certificate's common name: the node (or CA) it was issued to. */
export function certificateNode(certPem: string): string {
  const names = parseCertificate(certPem)
    .subject.split('\n')
    .filter((line) => line.startsWith('CN='));
  if (names.length !== 1) throw new AcpError('ACP_ERR_PKI_BAD_CERT', `the certificate has ${names.length} common names, expected exactly one`);
  return names[0]!.slice('CN='.length);
}

/** SHA-256 of the certificate's DER, lower-case hex without colons. */
export function fingerprint(certPem: string): string {
  return createHash('sha256').update(parseCertificate(certPem).raw).digest('hex');
}

/** True if the CA signed the certificate and both are within their validity now. */
export function verifyIssuedBy(certPem: string, caCertPem: string): boolean {
  const cert = parseCertificate(certPem);
  const ca = parseCertificate(caCertPem);
  const now = Date.now();
  return ca.ca && cert.checkIssued(ca) && cert.verify(ca.publicKey) && isCurrent(cert, now) && isCurrent(ca, now);
}

export function certificateExpiry(certPem: string): Date {
  return certificateDate(parseCertificate(certPem).validTo);
}

// ---- files ----

/** Writes a private file (mode 0600) atomically; its directory is created 0700 if missing. */
export function writeSecret(file: string, content: string): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  writeAtomic(file, content, 0o600);
}

/** Writes a world-readable file (mode 0644) atomically, e.g. a certificate. */
export function writePublic(file: string, content: string): void {
  mkdirSync(dirname(file), { recursive: true });
  writeAtomic(file, content, 0o644);
}

function writeAtomic(file: string, content: string, mode: number): void {
  const temp = `${file}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    // Created exclusively with its final mode, so a secret is never readable by others, even briefly.
    const fd = openSync(temp, 'wx', mode);
    try {
      writeSync(fd, content);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    chmodSync(temp, mode); // the umask may have taken bits the mode asked for
    renameSync(temp, file);
  } catch (error) {
    rmSync(temp, { force: true });
    throw error;
  }
}

// ---- helpers ----

function forgePrivateKey(pem: string): forge.pki.rsa.PrivateKey {
  try {
    return forge.pki.privateKeyFromPem(pem);
  } catch (error) {
    throw new AcpError('ACP_ERR_PKI_BAD_CERT', `the private key is not an RSA key in PEM form (${errorMessage(error)}); ACP's certificates need RSA keys`);
  }
}

function parseCertificate(pem: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (error) {
    throw new AcpError('ACP_ERR_PKI_BAD_CERT', `the certificate is not a PEM X.509 certificate (${errorMessage(error)}); check the file it came from`);
  }
}

function parseCa(certPem: string, keyPem: string): { caCert: forge.pki.Certificate; caKey: forge.pki.rsa.PrivateKey } {
  let caCert: forge.pki.Certificate;
  try {
    caCert = forge.pki.certificateFromPem(certPem);
  } catch (error) {
    throw new AcpError('ACP_ERR_PKI_BAD_CERT', `the CA certificate did not parse (${errorMessage(error)}); check the CA certificate file`);
  }
  const caKey = forgePrivateKey(keyPem);
  const caPublic = caCert.publicKey as forge.pki.rsa.PublicKey;
  if (caPublic.n.compareTo(caKey.n) !== 0) {
    throw new AcpError('ACP_ERR_PKI_BAD_CERT', 'the CA key does not belong to the CA certificate; check that both files come from the same acp init');
  }
  return { caCert, caKey };
}

function parseCsr(pem: string): forge.pki.CertificateSigningRequest {
  try {
    return forge.pki.certificationRequestFromPem(pem);
  } catch (error) {
    // forge reads RSA keys only, so a CSR for an EC key lands here too.
    throw new AcpError('ACP_ERR_PKI_BAD_CSR', `the certificate signing request did not parse (${errorMessage(error)}); it must be a PEM CSR for an RSA key`);
  }
}

/** The CSR's public key, once its signature, key size and CN check out. */
function checkCsr(csr: forge.pki.CertificateSigningRequest, node: string): forge.pki.rsa.PublicKey {
  if (!csr.verify()) throw new AcpError('ACP_ERR_PKI_BAD_CSR', 'the certificate signing request is not signed by its own key; create it again');
  const publicKey = csr.publicKey as forge.pki.rsa.PublicKey | null;
  if (!publicKey || publicKey.n.bitLength() < MIN_RSA_BITS) {
    throw new AcpError('ACP_ERR_PKI_BAD_CSR', `the certificate signing request's key is weaker than RSA-${MIN_RSA_BITS}; create it with a ${MIN_RSA_BITS}-bit key`);
  }
  const field: unknown = csr.subject.getField('CN');
  const commonName = typeof field === 'object' && field !== null ? (field as { value?: unknown }).value : undefined;
  if (commonName !== node) {
    throw new AcpError('ACP_ERR_PKI_BAD_CSR', `the certificate signing request is for ${JSON.stringify(commonName)}, not node '${node}'; create it with the node's own name`);
  }
  return publicKey;
}

function setValidity(cert: forge.pki.Certificate, notBefore: Date | undefined, notAfter: Date | undefined, validDays: number): void {
  const now = Date.now();
  cert.validity.notBefore = notBefore ?? new Date(now - CLOCK_SKEW_MS);
  cert.validity.notAfter = notAfter ?? new Date(now + validDays * DAY_MS);
}

/** A random positive serial, hex. The top byte is 0x40-0x7f: positive, and never needing DER's 0x00 padding. */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x3f) | 0x40;
  return bytes.toString('hex');
}

function certificateDate(text: string): Date {
  const date = new Date(text);
  if (Number.isNaN(date.getTime())) throw new AcpError('ACP_ERR_PKI_BAD_CERT', `the certificate has an unreadable date ${JSON.stringify(text)}`);
  return date;
}

function isCurrent(cert: X509Certificate, now: number): boolean {
  return certificateDate(cert.validFrom).getTime() <= now && now <= certificateDate(cert.validTo).getTime();
}
