/**
 * DKIM body hash benchmark: the relay's relaxed body hash (relay/src/dkim/canon.ts, fed while DATA streams
 * to disk) against two peers measured in the same run on the same bytes: mailauth's relaxed body hash
 * (what the tests verify with) and plain sha256 (the floor: no canonicalization at all).
 *
 *   npm run bench:dkim [-- --mib 64 --rounds 5]
 *
 * The body is mail-like text: 76-character lines, a blank line now and then, some trailing white space
 * and runs of spaces (what relaxed canonicalization rewrites), fed in 64 KiB chunks as DATA arrives.
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import { RelaxedBodyHash } from '../relay/src/dkim/canon.js';

const { values } = parseArgs({
  options: { mib: { type: 'string', default: '64' }, rounds: { type: 'string', default: '5' } },
});
const mib = Number(values.mib);
const rounds = Number(values.rounds);
if (!(mib >= 1 && mib <= 1024) || !(rounds >= 1 && rounds <= 50)) {
  console.error('--mib must be 1..1024 and --rounds 1..50');
  process.exit(2);
}

function body(bytes: number): Buffer {
  const lines: string[] = [];
  let size = 0;
  for (let i = 0; size < bytes; i++) {
    const text = `line ${i} ${'lorem ipsum dolor sit amet '.repeat(3)}`.slice(0, 70);
    const line =
      i % 17 === 0 ? '' : i % 11 === 0 ? `${text}   ` : i % 13 === 0 ? text.replace(' ', '    ') : text;
    lines.push(line);
    size += line.length + 2;
  }
  return Buffer.from(lines.join('\r\n') + '\r\n');
}

const CHUNK = 64 * 1024;
function feed(data: Buffer, update: (chunk: Buffer) => void): void {
  for (let i = 0; i < data.length; i += CHUNK) update(data.subarray(i, i + CHUNK));
}

interface Hasher {
  name: string;
  run(data: Buffer): string;
}
const require = createRequire(import.meta.url);
const { RelaxedHash } = require('mailauth/lib/dkim/body/relaxed') as {
  RelaxedHash: new (alg: string, max?: number) => { update(c: Buffer): void; digest(enc: string): string };
};
const hashers: Hasher[] = [
  {
    name: 'cartero (relay/src/dkim/canon.ts)',
    run: (d) => {
      const h = new RelaxedBodyHash();
      feed(d, (c) => h.update(c));
      return h.digest();
    },
  },
  {
    name: 'mailauth RelaxedHash',
    run: (d) => {
      const h = new RelaxedHash('sha256');
      feed(d, (c) => h.update(c));
      return h.digest('base64');
    },
  },
  {
    name: 'sha256 only (floor)',
    run: (d) => {
      const h = createHash('sha256');
      feed(d, (c) => h.update(c));
      return h.digest('base64');
    },
  },
];

const data = body(mib * 1024 * 1024);
const [ours, theirs] = [hashers[0]!.run(data), hashers[1]!.run(data)];
if (ours !== theirs) throw new Error(`body hashes differ: cartero ${ours}, mailauth ${theirs}`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const rates = hashers.map((h) => {
  const mbps: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    h.run(data);
    mbps.push(data.length / 1e6 / (Number(process.hrtime.bigint() - t0) / 1e9));
  }
  return median(mbps);
});
console.log(`relaxed body hash of ${mib} MiB, median of ${rounds} rounds (same body hash from both signers)`);
for (const [i, h] of hashers.entries())
  console.log(
    `  ${h.name.padEnd(36)} ${rates[i]!.toFixed(0).padStart(6)} MB/s  ${(rates[i]! / rates[0]!).toFixed(2)}× cartero`,
  );
