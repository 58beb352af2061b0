/**
 * DKIM "relaxed" canonicalization (RFC 6376 3.4.2 and 3.4.4), written for a streamed body: the body hash is
 * computed chunk by chunk while DATA goes to disk, holding nothing but a few counters. Runs of empty lines
 * (which relaxed canonicalization drops at the end of the body) are counted, not kept, and a line is never
 * held whole, so memory does not grow with the message, however long its lines or its trailing blank lines.
 * (mailauth's own body hasher keeps the trailing empty lines and an unfinished line in memory; see ADR 012.)
 */
import { createHash, type Hash } from 'node:crypto';

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const TAB = 0x09;
const SCRATCH = 16 * 1024;
const CRLFS = Buffer.from('\r\n'.repeat(SCRATCH / 2));

/**
 * The relaxed body hash (sha256) of a body fed in chunks. A bare LF ends a line like CRLF (the message is
 * delivered with CRLF line ends; verifiers see it so), a CR not followed by LF is an ordinary character.
 */
export class RelaxedBodyHash {
  private readonly hash: Hash = createHash('sha256');
  private readonly out = Buffer.allocUnsafe(SCRATCH);
  private n = 0;
  /** Empty lines seen since the last line with content: emitted only if more content follows. */
  private emptyLines = 0;
  /** White space seen in the current line after its last content: one SP if content follows. */
  private wsp = false;
  /** The current line has content (so its line end is emitted). */
  private content = false;
  /** The last byte was CR: a line end if LF follows, else content. */
  private cr = false;
  /** Body octets fed. */
  bytes = 0;

  update(chunk: Buffer): void {
    this.bytes += chunk.length;
    const len = chunk.length;
    let i = 0;
    while (i < len) {
      if (!this.cr && !this.wsp && this.emptyLines === 0) {
        // A run that canonicalizes to itself (characters, single spaces between them, CRLF after a line with
        // content) is hashed as it is, without a copy: most of a normal body.
        let j = i;
        let content = this.content;
        while (j < len) {
          const b = chunk[j];
          if (b > SP) {
            content = true;
            j++;
          } else if (b === SP && j + 1 < len && chunk[j + 1] > SP) {
            j += 2;
            content = true;
          } else if (b === CR && content && j + 1 < len && chunk[j + 1] === LF) {
            content = false;
            j += 2;
          } else break;
        }
        if (j > i) {
          this.flush();
          this.hash.update(chunk.subarray(i, j));
          this.content = content;
          i = j;
          if (i >= len) break;
        }
      }
      this.byte(chunk[i++]);
    }
  }

  /** One byte the slow way: white space, line ends and empty lines. */
  private byte(b: number): void {
    if (this.cr) {
      this.cr = false;
      if (b === LF) {
        this.endLine();
        return;
      }
      this.char(CR);
    }
    if (b === CR) this.cr = true;
    else if (b === LF) this.endLine();
    else if (b === SP || b === TAB) this.wsp = true;
    else this.char(b);
  }

  /** The base64 body hash; the hasher cannot be used after. */
  digest(): string {
    if (this.cr) this.char(CR);
    if (this.content) this.emit2(CR, LF);
    this.flush();
    return this.hash.digest('base64');
  }

  private char(b: number): void {
    if (this.emptyLines) this.flushEmptyLines();
    if (this.wsp) {
      this.wsp = false;
      this.emit(SP);
    }
    this.emit(b);
    this.content = true;
  }

  private endLine(): void {
    this.wsp = false;
    if (this.content) {
      this.emit2(CR, LF);
      this.content = false;
    } else this.emptyLines++;
  }

  private flushEmptyLines(): void {
    this.flush();
    let left = this.emptyLines * 2;
    this.emptyLines = 0;
    while (left > 0) {
      const k = Math.min(left, CRLFS.length);
      this.hash.update(CRLFS.subarray(0, k));
      left -= k;
    }
  }

  private emit(b: number): void {
    if (this.n === SCRATCH) this.flush();
    this.out[this.n++] = b;
  }

  private emit2(a: number, b: number): void {
    if (this.n > SCRATCH - 2) this.flush();
    this.out[this.n++] = a;
    this.out[this.n++] = b;
  }

  private flush(): void {
    if (this.n) this.hash.update(this.out.subarray(0, this.n));
    this.n = 0;
  }
}

/**
 * One header field in relaxed canonical form (RFC 6376 3.4.2): name in lower case, the value unfolded, runs
 * of white space made one SP, white space at the ends of the value dropped; `name:value` and CRLF.
 * `raw` is the whole field as received (name, colon, value, continuation lines, without the final line end).
 */
export function relaxedHeader(raw: string): string {
  const colon = raw.indexOf(':');
  const name = raw
    .slice(0, colon)
    .replace(/[ \t]+$/, '')
    .toLowerCase();
  const value = raw
    .slice(colon + 1)
    .replace(/\r?\n/g, '')
    .replace(/[ \t]+/g, ' ')
    .replace(/^ | $/g, '');
  return `${name}:${value}\r\n`;
}
