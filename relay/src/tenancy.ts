/**
 * Who is sending: the tenant of a client (by AUTH account, else by the most specific trusted network),
 * and the tenant's sender-domain policy. Pure lookups over the loaded config.
 */
import type { RelayConfig, TenantConfig } from './config.js';
import { parseIp } from './policy.js';

export class TenantDirectory {
  constructor(private readonly cfg: RelayConfig) {}

  get(name: string): TenantConfig | undefined {
    return this.cfg.tenants.get(name);
  }

  names(): string[] {
    return [...this.cfg.tenants.keys()];
  }

  /** Client address -> tenant (null: none). Rebuilt with the directory on reload; bounded. */
  private readonly byIp = new Map<string, string | null>();

  /** The tenant a client sends as, or undefined when it may not relay at all (no AUTH, untrusted address). */
  tenantForClient(user: string | undefined, clientIp: string): string | undefined {
    if (user) return this.cfg.accounts.get(user)?.tenant;
    let t = this.byIp.get(clientIp);
    if (t === undefined) {
      // parse the address once, then match it against the networks, most specific first
      const a = parseIp(clientIp);
      t = null;
      if (a) {
        for (const n of this.cfg.tenantNetworks) {
          if (n.net[0].kind() === a.kind() && a.match(n.net[0] as never, n.net[1])) {
            t = n.tenant;
            break;
          }
        }
      }
      if (this.byIp.size >= 10_000) this.byIp.clear();
      this.byIp.set(clientIp, t);
    }
    return t ?? undefined;
  }

  /** Why this tenant may not send from `from`, or undefined. The null sender is always allowed. */
  senderProblem(tenant: string, from: string): string | undefined {
    const t = this.cfg.tenants.get(tenant);
    if (!t || t.senderDomains.length === 0 || from === '') return undefined;
    const domain = from.slice(from.lastIndexOf('@') + 1).toLowerCase();
    const ok = t.senderDomains.some((d) => (d.startsWith('*.') ? domain.endsWith(d.slice(1)) : domain === d));
    return ok
      ? undefined
      : `sender domain ${domain} is not in the senderDomains of tenant ${tenant} (${t.senderDomains.join(', ')})`;
  }
}
