/**
 * A Flower node's identity and request signatures, with WebCrypto only (`crypto.subtle`: Node and browsers).
 * flwr 1.42 signs every Fleet request, authentication on or off (flwr/supernode/node_auth_http_interceptor.py):
 * the node holds an EC P-384 key pair; each request carries
 *   flwr-public-key: base64 of the public key as PEM (SubjectPublicKeyInfo) bytes,
 *   flwr-timestamp:  `datetime.now(UTC).isoformat()` ("2026-12-03T11:46:50.123456+00:00"),
 *   flwr-signature:  base64 of the DER ECDSA-SHA256 signature of the timestamp's ASCII bytes.
 * The SuperLink accepts timestamps within 300 s (+5 s drift) and, past registration, checks the key is the node's.
 * WebCrypto signs in IEEE P1363 form (r ‖ s, 48 bytes each); Python's `cryptography` verifies DER, hence derSignature.
 * Not here: the HTTP calls (transport.ts).
 */
import type { webcrypto } from 'node:crypto'; // types only (erased): the DOM's CryptoKey, which lib ES2022 lacks

type CryptoKey = webcrypto.CryptoKey;

/** A node's key pair with the public key's PEM bytes (the form Flower registers and compares). */
export interface NodeIdentity {
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  /** PEM of the SubjectPublicKeyInfo, as `public_key_to_bytes` writes it. */
  publicKeyPem: Uint8Array;
}

const subtle = () => globalThis.crypto.subtle;
const EC = { name: 'ECDSA', namedCurve: 'P-384' } as const;

/** Standard base64 of `bytes`. */
export function base64(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** PEM text of DER bytes under `label`, 64 columns a line, as OpenSSL (and so `cryptography`) writes it. */
export function pem(label: string, der: Uint8Array): string {
  const lines = base64(der).match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** A fresh P-384 identity (extractable, so it can be saved with exportIdentity and reused after a restart). */
export async function generateIdentity(): Promise<NodeIdentity> {
  const pair = (await subtle().generateKey(EC, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  return withPem(pair.privateKey, pair.publicKey);
}

async function withPem(privateKey: CryptoKey, publicKey: CryptoKey): Promise<NodeIdentity> {
  const spki = new Uint8Array(await subtle().exportKey('spki', publicKey));
  return { privateKey, publicKey, publicKeyPem: new TextEncoder().encode(pem('PUBLIC KEY', spki)) };
}

/** The identity's private key as PKCS#8 PEM (Flower's `private_key_to_bytes` form). */
export async function exportIdentity(id: NodeIdentity): Promise<string> {
  return pem('PRIVATE KEY', new Uint8Array(await subtle().exportKey('pkcs8', id.privateKey)));
}

/** An identity from a PKCS#8 PEM private key (as written by exportIdentity or by Flower's key tools). */
export async function importIdentity(pkcs8Pem: string): Promise<NodeIdentity> {
  const b64 = pkcs8Pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
  const der = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const privateKey = await subtle().importKey('pkcs8', der, EC, true, ['sign']);
  // WebCrypto derives no public key from a private one; its JWK carries x and y, which is all the public key is
  const { kty, crv, x, y } = await subtle().exportKey('jwk', privateKey);
  const publicKey = await subtle().importKey('jwk', { kty, crv, x, y, ext: true }, EC, true, ['verify']);
  return withPem(privateKey, publicKey);
}

/**
 * The public key in OpenSSH's one-line form, "ecdsa-sha2-nistp384 <base64> <comment>" (RFC 5656 §3.1: the strings
 * "ecdsa-sha2-nistp384" and "nistp384", then the uncompressed point 04‖X‖Y, each behind a 4-byte big-endian length):
 * what `flwr supernode register` reads (it refuses PEM).
 */
export async function openSshPublicKey(id: NodeIdentity, comment = 'lorakit-node'): Promise<string> {
  const point = new Uint8Array(await subtle().exportKey('raw', id.publicKey)); // 0x04 ‖ X ‖ Y, 97 bytes
  const parts = [new TextEncoder().encode('ecdsa-sha2-nistp384'), new TextEncoder().encode('nistp384'), point];
  const out = new Uint8Array(parts.reduce((n, p) => n + 4 + p.length, 0));
  let at = 0;
  for (const p of parts) {
    new DataView(out.buffer).setUint32(at, p.length);
    out.set(p, at + 4);
    at += 4 + p.length;
  }
  return `ecdsa-sha2-nistp384 ${base64(out)} ${comment}`;
}

/** DER `Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` of a P1363 signature (r ‖ s, equal halves). */
export function derSignature(p1363: Uint8Array): Uint8Array {
  const half = p1363.length / 2;
  const int = (bytes: Uint8Array) => {
    let i = 0;
    while (i < bytes.length - 1 && bytes[i] === 0) i++; // minimal: no leading zero bytes ...
    const v = bytes.subarray(i);
    const body = v[0] & 0x80 ? Uint8Array.of(0, ...v) : v; // ... except one that keeps a high bit positive
    return Uint8Array.of(0x02, body.length, ...body);
  };
  const r = int(p1363.subarray(0, half));
  const s = int(p1363.subarray(half));
  const len = r.length + s.length; // ≤ 2·(2 + 49) = 102 < 128: a one-byte length
  return Uint8Array.of(0x30, len, ...r, ...s);
}

/** Python's `datetime.now(UTC).isoformat()` for `date`: microseconds and "+00:00". */
export function pyIsoTimestamp(date: Date): string {
  return date.toISOString().replace(/\.(\d{3})Z$/, '.$1000+00:00');
}

/** The three signature headers of one request, signed now (or at `date`). */
export async function signedHeaders(id: NodeIdentity, date = new Date()): Promise<Record<string, string>> {
  const timestamp = pyIsoTimestamp(date);
  const p1363 = new Uint8Array(
    await subtle().sign({ name: 'ECDSA', hash: 'SHA-256' }, id.privateKey, new TextEncoder().encode(timestamp)),
  );
  return {
    'flwr-public-key': base64(id.publicKeyPem),
    'flwr-timestamp': timestamp,
    'flwr-signature': base64(derSignature(p1363)),
  };
}

/**
 * The identity saved in `file` (PKCS#8 PEM), or a new one written there (mode 0600) when the file does not exist,
 * with its public key beside it as `<file>.pub` (OpenSSH form: what `flwr supernode register` takes when the
 * SuperLink runs with --enable-supernode-auth). A client restarted with the same file rejoins as the same node.
 * Node-only.
 */
export async function loadOrCreateIdentity(file: string): Promise<NodeIdentity> {
  const { readFile, writeFile } = await import('node:fs/promises');
  try {
    return await importIdentity(await readFile(file, 'utf8'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const id = await generateIdentity();
  await writeFile(file, await exportIdentity(id), { mode: 0o600 });
  await writeFile(`${file}.pub`, `${await openSshPublicKey(id)}\n`);
  return id;
}
