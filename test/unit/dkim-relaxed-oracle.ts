/** mailauth's relaxed body hash, as an oracle for relay/src/dkim/canon.ts (test only). */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { RelaxedHash } = require('mailauth/lib/dkim/body/relaxed.js') as {
  RelaxedHash: new (algo: string) => { update(b: Buffer): void; digest(enc: 'base64'): string };
};

/** The relaxed sha256 body hash of `body` as mailauth computes it (bare LF made CRLF first, as its parser does). */
export function RelaxedBody(body: Buffer): string {
  const h = new RelaxedHash('sha256');
  h.update(Buffer.from(body.toString('latin1').replace(/\r?\n/g, '\r\n'), 'latin1'));
  return h.digest('base64');
}
