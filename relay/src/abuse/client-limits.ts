/**
 * Connection limits per client address (IPv6: per /64), per listener, as Postfix's anvil does with
 * `smtpd_client_connection_count_limit` and `smtpd_client_connection_rate_limit`: a cap on concurrent
 * connections and on new connections per time unit. Trusted networks are exempt. The listener-wide cap
 * (`maxConnections`) keeps `reservedForTrusted` slots that only trusted clients may take, so an
 * untrusted flood never locks the cluster's own senders out (decided in `admitGlobal`).
 */
import { SlidingCounter, clientKey } from './window.js';

export interface ClientLimits {
  maxConnectionsPerClient: number;
  /** New connections per client per `perMs`; undefined: no rate limit. */
  connectionRatePerClient?: { count: number; perMs: number };
}

export type Admission =
  { ok: true; release: () => void } | { ok: false; reason: 'client_connections' | 'client_rate' };

/** Whether a new connection fits under the listener-wide cap: untrusted ones leave the reserve free. */
export function admitGlobal(
  open: number,
  maxConnections: number,
  reservedForTrusted: number,
  trusted: boolean,
): boolean {
  return open <= (trusted ? maxConnections : Math.max(1, maxConnections - reservedForTrusted));
}

export class ClientConnections {
  private readonly open = new Map<string, number>();
  private readonly rate: SlidingCounter;

  constructor(now: () => number, cap = 100_000) {
    this.rate = new SlidingCounter(now, cap);
  }

  /** Admits a new connection from `address` (already counted in the listener's total) or says why not. */
  admit(address: string, trusted: boolean, l: ClientLimits): Admission {
    if (trusted) return { ok: true, release: () => undefined };
    const k = clientKey(address);
    const r = l.connectionRatePerClient;
    // a refused attempt counts too: a client hammering the port stays over its rate
    if (r && this.rate.hit(k, r.perMs) > r.count) return { ok: false, reason: 'client_rate' };
    const n = this.open.get(k) ?? 0;
    if (n >= l.maxConnectionsPerClient) return { ok: false, reason: 'client_connections' };
    this.open.set(k, n + 1);
    let released = false;
    return {
      ok: true,
      release: () => {
        if (released) return;
        released = true;
        const m = (this.open.get(k) ?? 1) - 1;
        if (m <= 0) this.open.delete(k);
        else this.open.set(k, m);
      },
    };
  }

  /** Client addresses with at least one open connection. */
  get clients(): number {
    return this.open.size;
  }
}
