/** The complaint-rate guard's metrics (ADR 018), in the relay's registry. See docs/metrics.md. */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { ComplaintSource } from './tenant-runtime.js';

export class ComplaintMetrics {
  readonly complaints: Counter<'tenant' | 'source'>;
  readonly rate: Gauge<'tenant'>;

  constructor(registry: Registry, rates: () => Map<string, number>) {
    this.complaints = new Counter({
      name: 'cartero_complaints_total',
      help: 'Complaints counted against a tenant (source: report = a parsed feedback report, admin = entered through the admin API).',
      labelNames: ['tenant', 'source'],
      registers: [registry],
    });
    this.rate = new Gauge({
      name: 'cartero_tenant_complaint_rate',
      help: "Complaints over delivered recipients in the tenant's complaint window (0..1).",
      labelNames: ['tenant'],
      registers: [registry],
      collect() {
        this.reset();
        for (const [tenant, v] of rates()) this.set({ tenant }, v);
      },
    });
  }

  count(tenant: string, source: ComplaintSource): void {
    this.complaints.inc({ tenant, source });
  }
}
