/**
 * Per-destination ready queues and reused outbound sessions: a Destination holds the jobs waiting for a
 * connection slot and the idle sessions kept open for the next transaction (closed after connectionIdleMs).
 */
import type { RelayConfig } from '../config.js';
import type { OutboundSession } from '../outbound.js';
import type { Route } from '../router.js';
import type { DestinationLimits, Shaper } from '../shaping.js';
import type { Job } from './types.js';

export class Destination {
  limits!: DestinationLimits;
  mxChecked = false;
  queue: Job[] = [];
  active = 0;
  idle: OutboundSession[] = [];
  idleTimer?: NodeJS.Timeout;
  constructor(
    readonly key: string,
    readonly route: Route,
  ) {}

  /**
   * (Re)computes the shaping limits from what this destination connects to: for MX delivery the
   * recipient domain, and the MX host once known; for a static route its host, whatever the recipient
   * domains it carries.
   */
  shape(shaper: Shaper, mxHost?: string): void {
    this.limits =
      this.route.kind === 'mx'
        ? shaper.limitsFor(this.route.domain, mxHost)
        : shaper.limitsForHost(this.route.host.host);
  }

  /** Transactions one session may carry to this destination. */
  perConnection(cfg: RelayConfig['delivery']): number {
    return Math.min(cfg.maxMessagesPerConnection, this.limits.messagesPerConnection);
  }

  /** An idle session bound to the same egress address, if any (spent or dead ones are closed on the way). */
  takeIdle(cfg: RelayConfig['delivery'], localAddress: string | undefined): OutboundSession | undefined {
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const s = this.idle[i];
      if (!s.usable || s.transactions >= this.perConnection(cfg)) {
        this.idle.splice(i, 1);
        s.quit();
        continue;
      }
      if (s.localAddress === localAddress) {
        this.idle.splice(i, 1);
        return s;
      }
    }
    return undefined;
  }

  /** Keeps a session for reuse, or closes it (engine stopping, spent, dead, or enough idle ones). */
  release(cfg: RelayConfig['delivery'], s: OutboundSession, running: boolean): void {
    if (
      !running ||
      !s.usable ||
      s.transactions >= this.perConnection(cfg) ||
      this.idle.length >= Math.min(cfg.perDestinationConcurrency, this.limits.maxConnections)
    ) {
      s.quit();
      return;
    }
    this.idle.push(s);
    if (!this.idleTimer) {
      const idleMs = cfg.connectionIdleMs;
      this.idleTimer = setInterval(
        () => {
          const cutoff = Date.now() - idleMs;
          this.idle = this.idle.filter((x) => (x.lastUsed < cutoff || !x.usable ? (x.quit(), false) : true));
          if (!this.idle.length) {
            clearInterval(this.idleTimer);
            this.idleTimer = undefined;
          }
        },
        Math.max(100, Math.floor(idleMs / 2)),
      );
      this.idleTimer.unref();
    }
  }

  /** Closes every idle session (engine stop). */
  closeIdle(): void {
    for (const s of this.idle) s.quit();
    this.idle = [];
    if (this.idleTimer) clearInterval(this.idleTimer);
    this.idleTimer = undefined;
  }
}
