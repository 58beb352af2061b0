/** Throw-away self-signed TLS certificates for tests (made with the openssl command line tool). */
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { makeTmpDir, removeTmpDir } from './tmp.js';

export interface TestCert {
  key: Buffer;
  cert: Buffer;
}

/** openssl arguments for a self-signed P-256 certificate for `cn`, valid two days (extensions added by callers). */
const selfSignedP256 = (keyFile: string, certFile: string, cn: string) => [
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
];

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
        ...selfSignedP256(keyFile, certFile, cn),
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

/** A throw-away certificate authority: its certificate, and leaf certificates it signs. */
export interface TestCa {
  /** The CA certificate (PEM): what a client trusts. */
  cert: Buffer;
  /** A key and certificate (PEM) signed by the CA for the DNS names `names` (the first is the CN). */
  issue(names: string[]): Promise<TestCert>;
}

/** Makes a P-256 test CA with the openssl command line tool (each call bounded to 15 s). */
export async function makeTestCa(cn = 'Cartero Test CA'): Promise<TestCa> {
  const run = (dir: string, args: string[]) =>
    promisify(execFile)('openssl', args, { cwd: dir, timeout: 15_000 });
  const dir = await makeTmpDir('cartero-ca-');
  try {
    await run(dir, [
      ...selfSignedP256('ca.key', 'ca.pem', cn),
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ]);
    const caKey = await readFile(path.join(dir, 'ca.key'));
    const caCert = await readFile(path.join(dir, 'ca.pem'));
    return {
      cert: caCert,
      async issue(names) {
        const d = await makeTmpDir('cartero-leaf-');
        try {
          await writeFile(path.join(d, 'ca.key'), caKey, { mode: 0o600 });
          await writeFile(path.join(d, 'ca.pem'), caCert);
          await writeFile(
            path.join(d, 'ext.cnf'),
            `subjectAltName=${names.map((n) => `DNS:${n}`).join(',')}\nextendedKeyUsage=serverAuth\n`,
          );
          await run(d, [
            'req',
            '-newkey',
            'ec',
            '-pkeyopt',
            'ec_paramgen_curve:prime256v1',
            '-nodes',
            '-keyout',
            'leaf.key',
            '-out',
            'leaf.csr',
            '-subj',
            `/CN=${names[0]}`,
          ]);
          await run(d, [
            'x509',
            '-req',
            '-in',
            'leaf.csr',
            '-CA',
            'ca.pem',
            '-CAkey',
            'ca.key',
            '-CAcreateserial',
            '-days',
            '2',
            '-extfile',
            'ext.cnf',
            '-out',
            'leaf.pem',
          ]);
          return {
            key: await readFile(path.join(d, 'leaf.key')),
            cert: await readFile(path.join(d, 'leaf.pem')),
          };
        } finally {
          await removeTmpDir(d);
        }
      },
    };
  } finally {
    await removeTmpDir(dir);
  }
}
