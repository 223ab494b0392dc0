// Request signing against flwr 1.42's own key serialisation and signatures (interop/flower/make_fixtures.py).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  base64,
  derSignature,
  exportIdentity,
  generateIdentity,
  importIdentity,
  openSshPublicKey,
  pyIsoTimestamp,
  signedHeaders,
} from '../../src/federated/signing.ts';

const f = JSON.parse(readFileSync('test/fixtures/federated/signing.json', 'utf8'));
const bytes = (b64: string) => new Uint8Array(Buffer.from(b64, 'base64'));

/** P1363 (r ‖ s) of a DER signature, for WebCrypto's verify: the inverse read, written independently of derSignature. */
function p1363(der: Uint8Array): Uint8Array {
  const out = new Uint8Array(96);
  let at = 2;
  for (const half of [0, 1]) {
    const len = der[at + 1];
    const v = der.subarray(at + 2, at + 2 + len);
    const trimmed = v[0] === 0 ? v.subarray(1) : v;
    out.set(trimmed, half * 48 + 48 - trimmed.length);
    at += 2 + len;
  }
  return out;
}

test('DER encoding of (r, s) equals cryptography.encode_dss_signature, leading zeros and high bits included', () => {
  for (const p of f.der_pairs as { p1363: string; der: string }[]) {
    assert.equal(base64(derSignature(bytes(p.p1363))), p.der);
  }
});

test("a key imported from Flower's PKCS#8 PEM gives Flower's exact public-key PEM and verifies its signature", async () => {
  const id = await importIdentity(f.private_key_pem);
  assert.equal(new TextDecoder().decode(id.publicKeyPem), f.public_key_pem);
  const ok = await crypto.subtle.verify(
    { name: 'ECDSA', hash: 'SHA-256' },
    id.publicKey,
    p1363(bytes(f.signature_der)),
    new TextEncoder().encode(f.timestamp),
  );
  assert.ok(ok);
});

test('signed headers carry base64 PEM, a Python isoformat timestamp and a DER signature that verifies', async () => {
  const id = await generateIdentity();
  const at = new Date(Date.UTC(2026, 11, 3, 11, 46, 50, 123));
  const h = await signedHeaders(id, at);
  assert.equal(h['flwr-timestamp'], '2026-12-03T11:46:50.123000+00:00');
  assert.equal(Buffer.from(h['flwr-public-key'], 'base64').toString(), new TextDecoder().decode(id.publicKeyPem));
  assert.match(new TextDecoder().decode(id.publicKeyPem), /^-----BEGIN PUBLIC KEY-----\n/);
  const der = bytes(h['flwr-signature']);
  assert.equal(der[0], 0x30);
  const ok = await crypto.subtle.verify(
    { name: 'ECDSA', hash: 'SHA-256' },
    id.publicKey,
    p1363(der),
    new TextEncoder().encode(h['flwr-timestamp']),
  );
  assert.ok(ok);
});

test('an exported identity re-imports to the same public key', async () => {
  const id = await generateIdentity();
  const again = await importIdentity(await exportIdentity(id));
  assert.deepEqual(again.publicKeyPem, id.publicKeyPem);
  assert.equal(pyIsoTimestamp(new Date(0)), '1970-01-01T00:00:00.000000+00:00');
});

test("the OpenSSH public key equals cryptography's Encoding.OpenSSH form of Flower's key (flwr supernode register)", async () => {
  const id = await importIdentity(f.private_key_pem);
  const [kind, body] = (await openSshPublicKey(id)).split(' ');
  assert.equal(`${kind} ${body}`, f.public_key_openssh);
});
