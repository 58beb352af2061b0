/** The spool's own figures: space held for messages still arriving, and write failures by cause. */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Spool } from './disk.js';

export function registerSpoolMetrics(r: Registry, spool: () => Spool): void {
  new Gauge({
    name: 'cartero_spool_reserved_bytes',
    help: 'Disk space held for transactions in flight (declared SIZE or the size limit, less what is written).',
    registers: [r],
    collect() {
      this.set(spool().space.reservedBytes);
    },
  });
  new Gauge({
    name: 'cartero_spool_reservations',
    help: 'Transactions holding disk space and a message slot (from MAIL FROM to the end of DATA).',
    registers: [r],
    collect() {
      this.set(spool().reservations);
    },
  });
  new Gauge({
    name: 'cartero_spool_available_bytes',
    help: 'Free space on the spool volume that may still be promised (free − reserved − queue.minFreeBytes).',
    registers: [r],
    collect() {
      const a = spool().space.available();
      this.set(Number.isFinite(a) ? a : -1);
    },
  });
  new Counter({
    name: 'cartero_spool_write_errors_total',
    help: 'Spool writes that failed (the message was refused with 452/451 and its partial file removed), by errno.',
    labelNames: ['code'],
    registers: [r],
    collect() {
      this.reset();
      for (const [code, n] of spool().writeErrors) this.inc({ code }, n);
    },
  });
}
