/**
 * Observe: what each relay pod's admin API says (queue, tenants, config revision, drain), read every
 * reconcile. One slow or failed answer is not news: a pod's last figures stand in for up to
 * FIGURES_GRACE_MS before the error is reported.
 */
import { errorText } from '../errors.js';
import { isReady, type Pod } from '../cache.js';
import { knownDepth, type LintRuleSummary, type RelayAdmin, type TenantState } from './admin-client.js';

/** How long a pod's last admin API figures stand in for failed reads before status reports the error. */
export const FIGURES_GRACE_MS = 30_000;

export interface PodFigures {
  name: string;
  ready: boolean;
  ip?: string;
  revision?: string | null;
  queue?: number;
  byTenant?: Record<string, number>;
  tenants?: TenantState[];
  draining?: boolean;
  /** The relay still indexes its spool: its queue is not known yet. */
  recovering?: boolean;
  /** Bulk-sender lint rules broken in the last hour, per tenant (GET /lint; absent on older relays). */
  lint?: Record<string, LintRuleSummary[]>;
  error?: string;
}

export class FiguresReader {
  /** Per pod uid: the last figures its admin API gave. */
  private readonly last = new Map<string, { at: number; f: PodFigures }>();

  async read(pods: Pod[], admin: (ip: string) => RelayAdmin): Promise<PodFigures[]> {
    return Promise.all(
      pods.map(async (p): Promise<PodFigures> => {
        const f: PodFigures = {
          name: p.metadata.name,
          ready: isReady(p),
          ...(p.status?.podIP ? { ip: p.status.podIP } : {}),
        };
        if (!p.status?.podIP || p.metadata.deletionTimestamp) return f;
        const a = admin(p.status.podIP);
        try {
          const [q, t, c, d, l] = await Promise.all([
            a.queue(),
            a.tenants(),
            a.config(),
            a.drainStatus(),
            // a relay without the lint (older image) answers 404: no figures, not an error
            a.lint().catch(() => undefined),
          ]);
          // a relay still indexing its spool does not know its queue yet: neither empty nor a figure
          const depth = knownDepth(q);
          Object.assign(f, {
            queue: depth,
            byTenant: depth === undefined ? undefined : q.byTenant,
            recovering: depth === undefined,
            tenants: t,
            revision: c.revision,
            draining: d.draining,
            ...(l ? { lint: l.tenants } : {}),
          });
          this.last.set(p.metadata.uid, { at: Date.now(), f: { ...f } });
        } catch (e) {
          const last = this.last.get(p.metadata.uid);
          if (last && Date.now() - last.at < FIGURES_GRACE_MS) return { ...last.f, ready: f.ready };
          f.error = errorText(e);
        }
        return f;
      }),
    );
  }

  /** Forgets a pod that is gone. */
  forget(uid: string): void {
    this.last.delete(uid);
  }
}
