/**
 * Feedback report parsing benchmark: the listener's bounded reader (relay/src/feedback/report.ts, mime.ts)
 * against mailparser's simpleParser (the well-kept full MIME parser ADR 016 chose not to use) on the same
 * bytes, in the same run: a real ARF report, a DSN, and hostile shapes up to the listener's largest
 * message size (10 MiB). Every report is parsed on the relay's one thread, mail's included, so time per
 * report is what an attacker can take from delivery.
 *
 *   npm run bench:feedback [-- --rounds 3]
 *
 * Prints milliseconds per report (median of the rounds) and the ratio cartero/mailparser; no pass/fail.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { simpleParser } from 'mailparser';
import { readReport } from '../relay/src/feedback/report.js';
import { REPO_ROOT } from './measure.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '3' } } });
const rounds = Number(values.rounds);
if (!(rounds >= 1 && rounds <= 20)) {
  console.error('--rounds must be 1..20');
  process.exit(2);
}

const M = 10 * 1024 * 1024;
const crlf = (s: string) => Buffer.from(s.replace(/\r?\n/g, '\r\n'));
const fixture = (name: string) =>
  crlf(
    readFileSync(path.join(REPO_ROOT, 'test/fixtures/feedback', name), 'utf8')
      .split('{{RCPT}}')
      .join('bob@dest.test')
      .split('{{MESSAGE_ID}}')
      .join('<m1@acme.test>'),
  );
const run = 'a'.repeat(1024 * 1024);
const shapes: [string, Buffer][] = [
  ['ARF report (RFC 5965 sample)', fixture('arf-rfc5965.eml')],
  ['1 MiB unterminated address', crlf(`To: <${run}\nSubject: x\n\n550 5.1.1 ${run}\n`)],
  ['10 MiB of header fields', Buffer.from('a:b\n'.repeat(M / 4))],
  ['10 MiB folded field', Buffer.from(`X: a\n${' b\n'.repeat(M / 3)}\nbody`)],
  [
    '10 MiB To in the returned message',
    Buffer.from(
      `Content-Type: multipart/report; boundary=b\n\n--b\nContent-Type: message/rfc822\n\nTo: ${'a@b.cc,'.repeat(M / 7)}\n\nx\n--b--\n`,
    ),
  ],
  [
    '10 MiB of empty body parts',
    Buffer.from(`Content-Type: multipart/mixed; boundary=b\n\n${'--b\n'.repeat(M / 4)}`),
  ],
  [
    '10 MiB quoted-printable part',
    Buffer.from(`Content-Transfer-Encoding: quoted-printable\n\n${'=41'.repeat(Math.floor(M / 3))}`),
  ],
];

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
/** Median ms of `f`, and the error it ended with if it refused the input (mailparser's own limits). */
async function time(f: () => unknown): Promise<{ ms: number; refused?: string }> {
  const samples: number[] = [];
  let refused: string | undefined;
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    try {
      await f();
    } catch (e) {
      refused = (e as { code?: string }).code ?? (e as Error).message;
    }
    samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return { ms: median(samples), ...(refused ? { refused } : {}) };
}

console.log(`report parsing, ms per report, median of ${rounds} rounds (same bytes for both)`);
console.log(
  `${'input'.padEnd(36)} ${'cartero'.padStart(9)} ${'mailparser'.padStart(11)} ${'ratio'.padStart(7)}`,
);
const rows: { input: string; bytes: number; cartero: number; mailparser: number; refused?: string }[] = [];
for (const [name, raw] of shapes) {
  const ours = await time(() => readReport(raw));
  const theirs = await time(() => simpleParser(raw, { skipHtmlToText: true, skipTextToHtml: true }));
  rows.push({
    input: name,
    bytes: raw.length,
    cartero: ours.ms,
    mailparser: theirs.ms,
    ...(theirs.refused ? { refused: theirs.refused } : {}),
  });
  console.log(
    `${name.padEnd(36)} ${ours.ms.toFixed(1).padStart(9)} ${theirs.ms.toFixed(1).padStart(11)} ${(ours.ms / theirs.ms).toFixed(2).padStart(7)}${theirs.refused ? `  (mailparser refused: ${theirs.refused})` : ''}`,
  );
}
console.log('ratio = cartero / mailparser (below 1: cartero faster)');
console.log(JSON.stringify({ bench: 'feedback-parse', rounds, rows }));
