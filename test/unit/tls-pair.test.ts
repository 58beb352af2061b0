/** Unit tests for checkTlsPair: the check a renewed certificate passes before the listeners use it. */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { checkTlsPair } from '../../relay/src/tls-pair.js';
import { makeSelfSignedCert, type TestCert } from '../helpers/certs.js';

describe('checkTlsPair', () => {
  let a: TestCert;
  let b: TestCert;
  before(async () => {
    [a, b] = await Promise.all([makeSelfSignedCert('a.test'), makeSelfSignedCert('b.test')]);
  });

  test('a matching pair: notAfter, fingerprint and subject of the certificate', () => {
    const x = new X509Certificate(a.cert);
    const info = checkTlsPair(a.cert, a.key);
    assert.equal(info.fingerprint256, x.fingerprint256);
    assert.equal(info.notAfter, Date.parse(x.validTo));
    assert.match(info.subject, /CN=a\.test/);
  });

  test('a chain: the first certificate is the leaf', () => {
    const info = checkTlsPair(Buffer.concat([a.cert, b.cert]), a.key);
    assert.equal(info.fingerprint256, new X509Certificate(a.cert).fingerprint256);
  });

  test('a key of another certificate is refused', () => {
    assert.throws(() => checkTlsPair(a.cert, b.key), /does not match/);
  });

  test('a truncated certificate or key is refused (a file caught mid-write)', () => {
    assert.throws(() => checkTlsPair(a.cert.subarray(0, 40), a.key), /certificate does not parse/);
    assert.throws(() => checkTlsPair(a.cert, a.key.subarray(0, 40)), /private key does not parse/);
    assert.throws(() => checkTlsPair(Buffer.alloc(0), Buffer.alloc(0)), /does not parse/);
  });
});
