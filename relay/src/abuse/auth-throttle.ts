/**
 * AUTH throttling, as Postfix's anvil (`smtpd_client_auth_rate_limit`) and fail2ban do it, in memory
 * per relay:
 * - per connection: the Nth failure closes the connection (421 4.7.0); failures after the first are
 *   answered after a growing delay (`failureDelay`, doubling, at most `maxFailureDelay`);
 * - per client address (IPv6: per /64) and per account name: a failure budget over a sliding window;
 *   past it, AUTH from that address, or for that account, is refused with 454 4.7.0 for `lockout`,
 *   whether the password is right or not and whether the account exists or not.
 * Trusted networks are exempt from the address and account locks (an attacker must not be able to
 * lock the cluster's own senders out); the fleet's peer account is exempt from the address lock. Both
 * still have the per-connection limit. The decisions are here; the SMTP side is in inbound.ts.
 */
import type { AuthLimits } from '../contract/config-types.js';
import { SlidingCounter, clientKey } from './window.js';

export type { AuthLimits };

export const DEFAULT_AUTH_LIMITS: AuthLimits = {
  failuresPerConnection: 3,
  failureDelayMs: 1000,
  maxFailureDelayMs: 8000,
  clientFailures: 10,
  accountFailures: 30,
  windowMs: 10 * 60_000,
  lockoutMs: 15 * 60_000,
};

export interface AuthAttempt {
  address: string;
  username: string;
  /** The client is in a trusted network. */
  trusted: boolean;
  /** The username is the fleet's peer account. */
  peer: boolean;
}

export type Lock = { scope: 'client' | 'account'; until: number };

/** How long to wait before answering the `nth` failure (1-based) on a connection. */
export function failureDelay(nth: number, l: AuthLimits): number {
  if (nth <= 1 || l.failureDelayMs <= 0) return 0;
  return Math.min(l.maxFailureDelayMs, l.failureDelayMs * 2 ** Math.min(nth - 2, 30));
}

/** Whether the `nth` failure on a connection is the one that closes it. */
export function closesConnection(nth: number, l: AuthLimits): boolean {
  return nth >= l.failuresPerConnection;
}

export class AuthThrottle {
  private readonly clients: SlidingCounter;
  private readonly accounts: SlidingCounter;

  constructor(
    private readonly limits: () => AuthLimits,
    private readonly now: () => number,
    cap = 100_000,
  ) {
    this.clients = new SlidingCounter(now, cap);
    this.accounts = new SlidingCounter(now, cap);
  }

  /** The lock that refuses this attempt before its password is looked at, or undefined. */
  locked(a: AuthAttempt): Lock | undefined {
    if (a.trusted) return undefined;
    if (!a.peer) {
      const until = this.clients.lockedUntil(clientKey(a.address));
      if (until !== undefined) return { scope: 'client', until };
    }
    const until = this.accounts.lockedUntil(accountKey(a.username));
    return until !== undefined ? { scope: 'account', until } : undefined;
  }

  /** Records a failed attempt; returns the locks it started (for the one log line per lockout). */
  failed(a: AuthAttempt): Lock[] {
    if (a.trusted) return [];
    const l = this.limits();
    const started: Lock[] = [];
    if (!a.peer && l.clientFailures > 0) {
      const k = clientKey(a.address);
      if (this.clients.hit(k, l.windowMs) >= l.clientFailures) {
        const u = this.nowPlus(l.lockoutMs);
        this.clients.lock(k, u);
        started.push({ scope: 'client', until: u });
      }
    }
    if (l.accountFailures > 0) {
      const k = accountKey(a.username);
      if (this.accounts.hit(k, l.windowMs) >= l.accountFailures) {
        const u = this.nowPlus(l.lockoutMs);
        this.accounts.lock(k, u);
        started.push({ scope: 'account', until: u });
      }
    }
    return started;
  }

  /** Addresses (IPv6: /64s) locked right now. */
  lockedClients(): number {
    return this.clients.locked();
  }

  /** Account names locked right now. */
  lockedAccounts(): number {
    return this.accounts.locked();
  }

  private nowPlus(ms: number): number {
    return this.now() + ms;
  }
}

/** Account names compare case-insensitively and are length-capped (the key must not be a memory vector). */
function accountKey(username: string): string {
  return username.slice(0, 256).toLowerCase();
}
