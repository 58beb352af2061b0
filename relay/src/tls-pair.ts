/**
 * Checks a TLS certificate and private key before the listeners use them: both parse, the key belongs
 * to the certificate, and Node can build a secure context from them. Pure (no I/O).
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { createSecureContext } from 'node:tls';

export interface TlsPairInfo {
  /** The leaf certificate's notAfter, in ms since the epoch. */
  notAfter: number;
  /** SHA-256 fingerprint of the leaf certificate, as Node prints it (AA:BB:...). */
  fingerprint256: string;
  subject: string;
}

/** Returns what the leaf certificate says, or throws an Error saying what is wrong with the pair. */
export function checkTlsPair(cert: Buffer, key: Buffer): TlsPairInfo {
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert); // the first certificate of a chain: the leaf
  } catch (e) {
    throw new Error(`the certificate does not parse: ${(e as Error).message}`, { cause: e });
  }
  let k;
  try {
    k = createPrivateKey(key);
  } catch (e) {
    throw new Error(`the private key does not parse: ${(e as Error).message}`, { cause: e });
  }
  if (!x509.checkPrivateKey(k)) throw new Error('the private key does not match the certificate');
  try {
    createSecureContext({ cert, key, minVersion: 'TLSv1.2' });
  } catch (e) {
    throw new Error(`the pair cannot be used for TLS: ${(e as Error).message}`, { cause: e });
  }
  return {
    notAfter: Date.parse(x509.validTo),
    fingerprint256: x509.fingerprint256,
    subject: x509.subject,
  };
}
