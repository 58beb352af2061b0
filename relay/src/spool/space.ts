/**
 * Disk space held for messages still arriving. Postfix refuses MAIL when free space is under 1.5 ×
 * message_size_limit; we go further and reserve each transaction's declared SIZE (or the size limit) across
 * every transaction in flight, so concurrent writers cannot together fill the disk past `minFreeBytes`.
 *
 *   available = statfs free − bytes we wrote since that statfs − (reserved − written, over live reservations)
 *               − minFreeBytes
 *
 * Files we delete show up at the next statfs only, which errs on the side of refusing. A reservation grows
 * when a client sends more than it declared, and is refused (452) when the growth does not fit.
 */
import { statfs } from 'node:fs/promises';

export class Reservation {
  written = 0;
  released = false;
  constructor(
    private readonly owner: SpaceAccountant,
    public bytes: number,
  ) {}
  /** Records `n` more bytes written; grows the reservation if needed. False when the growth does not fit. */
  wrote(n: number): boolean {
    this.written += n;
    this.owner.writtenSinceStat += n;
    if (this.written <= this.bytes) return true;
    const more = this.written - this.bytes;
    // the bytes are already on disk: they left `available` through writtenSinceStat; ask only for headroom
    if (this.owner.available() < 0) return false;
    this.bytes += more;
    return true;
  }
  release(): void {
    if (this.released) return;
    this.released = true;
    this.owner.live.delete(this);
  }
  get outstanding(): number {
    return Math.max(0, this.bytes - this.written);
  }
}

export class SpaceAccountant {
  readonly live = new Set<Reservation>();
  private statFree = Number.POSITIVE_INFINITY;
  writtenSinceStat = 0;
  private statAt = 0;
  private pending?: Promise<void>;

  constructor(
    private readonly dir: string,
    public minFreeBytes: number,
    private readonly statfsFn: (dir: string) => Promise<{ bavail: number; bsize: number }> = statfs,
  ) {}

  /** Bytes that may still be promised. */
  available(): number {
    let outstanding = 0;
    for (const r of this.live) outstanding += r.outstanding;
    return this.statFree - this.writtenSinceStat - outstanding - this.minFreeBytes;
  }

  get reservedBytes(): number {
    let n = 0;
    for (const r of this.live) n += r.outstanding;
    return n;
  }

  /** Re-reads free space, sharing a statfs already in flight; at most every `maxAgeMs`. */
  refresh(maxAgeMs = 0): Promise<void> {
    if (this.pending) return this.pending;
    if (maxAgeMs > 0 && Date.now() - this.statAt < maxAgeMs) return Promise.resolve();
    const writtenBefore = this.writtenSinceStat;
    this.pending = this.statfsFn(this.dir)
      .then(
        (s) => {
          this.statFree = s.bavail * s.bsize;
          // bytes written while statfs ran may or may not be in its figure: count them (refusing errs safe)
          this.writtenSinceStat -= writtenBefore;
          this.statAt = Date.now();
        },
        () => undefined, // keep the last figure
      )
      .finally(() => (this.pending = undefined));
    return this.pending;
  }

  /** Reserves `bytes` or returns undefined when they do not fit. Synchronous: check and take in one step. */
  tryReserve(bytes: number): Reservation | undefined {
    if (this.available() - bytes < 0) return undefined;
    const r = new Reservation(this, bytes);
    this.live.add(r);
    return r;
  }

  /**
   * Room for the relay's own messages (DSNs): they replace a message that is about to leave the queue, and
   * refusing one keeps that message (and makes its next attempt deliver again to recipients already done).
   * So they are not held back by other transactions' reservations, and may use half of minFreeBytes.
   */
  tryReserveInternal(bytes: number): Reservation | undefined {
    if (this.statFree - this.writtenSinceStat - this.minFreeBytes / 2 - bytes < 0) return undefined;
    const r = new Reservation(this, bytes);
    this.live.add(r);
    return r;
  }

  /** After ENOSPC the figure is wrong: make the next check re-read it. */
  invalidate(): void {
    this.statAt = 0;
  }
}

/**
 * The space check of best-effort data on the spool volume (the event outbox, the sent-message index):
 * whether `bytes` more fit without eating into what mail needs (queue.minFreeBytes and the reservations
 * of transactions in flight), and the report of bytes written, so the next check counts them.
 */
export function besideMail(space: SpaceAccountant): {
  room(bytes: number): boolean;
  wrote(bytes: number): void;
} {
  return {
    room: (n) => space.available() - n >= 0,
    wrote: (n) => void (space.writtenSinceStat += n),
  };
}
