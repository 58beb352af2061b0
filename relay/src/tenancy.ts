/**
 * Who is sending: the tenant of a client (by AUTH account, else by the most specific trusted network),
 * and the tenant's sender-domain policy. Pure lookups over the loaded config.
 */
import type { RelayConfig, TenantConfig } from './config.js';
import { inNetworks } from './policy.js';

export class TenantDirectory {
  constructor(private readonly cfg: RelayConfig) {}

  get(name: string): TenantConfig | undefined {
    return this.cfg.tenants.get(name);
  }

  names(): string[] {
    return [...this.cfg.tenants.keys()];
  }

  /** The tenant a client sends as, or undefined when it may not relay at all (no AUTH, untrusted address). */
  tenantForClient(user: string | undefined, clientIp: string): string | undefined {
    if (user) return this.cfg.accounts.get(user)?.tenant;
    for (const n of this.cfg.tenantNetworks) if (inNetworks(clientIp, [n.net])) return n.tenant;
    return undefined;
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
