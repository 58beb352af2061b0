/** Throw-away self-signed TLS certificates for tests (made with the openssl command line tool). */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { makeTmpDir, removeTmpDir } from './tmp.js';

export interface TestCert {
  key: Buffer;
  cert: Buffer;
}

/**
 * Makes a self-signed P-256 certificate for `cn`, valid for DNS:cn, DNS:localhost and IP 127.0.0.1.
 * Takes a few tens of milliseconds; bounded to 15 s.
 */
export async function makeSelfSignedCert(cn = 'localhost'): Promise<TestCert> {
  const dir = await makeTmpDir('cartero-cert-');
  try {
    const keyFile = path.join(dir, 'key.pem');
    const certFile = path.join(dir, 'cert.pem');
    await promisify(execFile)(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-days',
        '2',
        '-keyout',
        keyFile,
        '-out',
        certFile,
        '-subj',
        `/CN=${cn}`,
        '-addext',
        `subjectAltName=DNS:${cn},DNS:localhost,IP:127.0.0.1`,
      ],
      { timeout: 15_000 },
    );
    return { key: await readFile(keyFile), cert: await readFile(certFile) };
  } finally {
    await removeTmpDir(dir);
  }
}
