/**
 * Per-destination traffic shaping: how many connections a destination gets, how many messages go
 * over one connection, how fast messages may be sent (a token bucket per destination key), and an
 * exponential back-off when the destination says it is being flooded (a reply the classifier in
 * delivery/classify.ts decides is a `throttle`: 421, or a 4xx throttle reply).
 *
 * A destination is what the relay connects to: for MX delivery a recipient domain (reached through its
 * MX hosts), for a static route (smarthost or domain route) the route's host, which carries mail for
 * many recipient domains. Limits come from rules matched on the recipient domain and/or the MX host
 * (`limitsFor`), or, for a static route, on its host alone (`limitsForHost`: only rules without a
 * `domain`, their `mx` pattern matched against the host; the recipient domain of whichever message
 * happened to open the route never decides the route's limits):
 *  1. the user's rules, then
 *  2. `BUILTIN_RULES` (conservative figures for the big mailbox providers), then
 *  3. the defaults.
 * Fields are merged: each of `maxConnections`, `messagesPerConnection` and `messagesPerSecond` comes
 * from the first rule in that order that sets it, so a user rule that only lowers `maxConnections`
 * for gmail.com keeps the built-in `messagesPerConnection`. Built-in figures only ever tighten the
 * defaults (each is min(built-in, default)): an operator with stricter defaults stays strict.
 *
 * Within the user rules (and within the built-ins), a rule matching on the domain beats one matching
 * only on the MX host: the domain names one destination, the MX host names a provider shared by many
 * domains, so `domain: example.com` is the exception to `mx: '*.google.com'`, not the other way
 * round. Among domain matches an exact name beats the longest `*.suffix`, which beats shorter ones
 * (like the router); a rule giving both `domain` and `mx` must match both and ranks above a
 * domain-only rule with the same domain pattern. Remaining ties go to the earlier rule.
 *
 * Patterns: `example.com` matches that name exactly; `*.example.com` matches its subdomains at any
 * depth but not `example.com` itself (like the router's wildcards); `*` matches every name.
 * Matching is case-insensitive and ignores a trailing dot.
 */

export interface ShapingRule {
  /** Recipient domain (MX delivery only): exact, `*.suffix` or `*`. */
  domain?: string;
  /**
   * The host connected to (the MX host, or a static route's host): exact, `*.suffix` (e.g.
   * `*.google.com`) or `*`.
   */
  mx?: string;
  maxConnections?: number;
  messagesPerConnection?: number;
  messagesPerSecond?: number;
}

export interface ShapingConfig {
  defaults: { maxConnections: number; messagesPerConnection: number; messagesPerSecond?: number };
  rules: ShapingRule[];
  /** Back-off after a throttle reply: `initialMs`, doubling per further throttle, at most `maxMs`. */
  backoff: { initialMs: number; maxMs: number };
  /** Whether `BUILTIN_RULES` apply (default true). */
  builtins?: boolean;
}

export interface DestinationLimits {
  maxConnections: number;
  messagesPerConnection: number;
  /** Undefined: no rate limit. */
  messagesPerSecond?: number;
}

/*
 * Built-in rules for the big mailbox providers. None of them publishes hard figures for inbound
 * connections; their sender guidelines (Google's "Email sender guidelines", Microsoft's
 * "Outlook.com postmaster" / "Sender support", Yahoo's Sender Hub, Apple's iCloud postmaster page)
 * ask for the same thing: keep concurrent connections modest, send at a consistent volume, and slow
 * down when deferred. The figures below are the conservative end of what MTAs commonly ship for
 * these providers (10-20 connections, tens to a hundred messages per connection). No message rate
 * is set: providers throttle by sender reputation, which no fixed rate can anticipate; their
 * 421/4.7.x deferrals drive the back-off instead. The MX patterns also catch custom domains hosted
 * by these providers (Google Workspace, Microsoft 365, Yahoo/AOL, iCloud custom domains).
 */
export const BUILTIN_RULES: ShapingRule[] = [
  // Google (gmail-smtp-in.l.google.com, aspmx.l.google.com, alt*.aspmx.l.google.com,
  // aspmx2.googlemail.com): copes with parallelism well; long-lived connections are fine.
  { domain: 'gmail.com', maxConnections: 20, messagesPerConnection: 100 },
  { domain: 'googlemail.com', maxConnections: 20, messagesPerConnection: 100 },
  { mx: '*.google.com', maxConnections: 20, messagesPerConnection: 100 },
  { mx: '*.googlemail.com', maxConnections: 20, messagesPerConnection: 100 },
  // Microsoft consumer and Microsoft 365 (*.olc.protection.outlook.com, *.mail.protection.outlook.com;
  // '*.outlook.com' covers both): throttles per IP quickly ("4.7.500 Server busy", "4.7.650 ... rate
  // limited"), and prefers fewer messages per connection.
  { domain: 'outlook.com', maxConnections: 10, messagesPerConnection: 50 },
  { domain: 'hotmail.com', maxConnections: 10, messagesPerConnection: 50 },
  { domain: 'live.com', maxConnections: 10, messagesPerConnection: 50 },
  { domain: 'msn.com', maxConnections: 10, messagesPerConnection: 50 },
  { mx: '*.outlook.com', maxConnections: 10, messagesPerConnection: 50 },
  // Yahoo and AOL (mta*.am0.yahoodns.net, mx-aol.mail.gm0.yahoodns.net): the strictest of the four
  // ("[TSS04] ... temporarily deferred due to unexpected volume"); few connections, short ones.
  { domain: 'yahoo.com', maxConnections: 10, messagesPerConnection: 20 },
  { domain: 'ymail.com', maxConnections: 10, messagesPerConnection: 20 },
  { domain: 'aol.com', maxConnections: 10, messagesPerConnection: 20 },
  { mx: '*.yahoodns.net', maxConnections: 10, messagesPerConnection: 20 },
  // Apple iCloud (mx01.mail.icloud.com, mx02.mail.icloud.com): a smaller platform; modest figures.
  { domain: 'icloud.com', maxConnections: 10, messagesPerConnection: 50 },
  { domain: 'me.com', maxConnections: 10, messagesPerConnection: 50 },
  { domain: 'mac.com', maxConnections: 10, messagesPerConnection: 50 },
  { mx: '*.icloud.com', maxConnections: 10, messagesPerConnection: 50 },
];

interface Matcher {
  /** -1 absent; 0 `*`; suffix length + 1 for `*.suffix`; 1e6 exact. */
  rank: number;
  test: (name: string) => boolean;
}

const EXACT = 1e6;

function normalize(name: string): string {
  const n = name.trim().toLowerCase();
  return n.endsWith('.') ? n.slice(0, -1) : n;
}

function compilePattern(pattern: string, what: string): Matcher {
  const p = normalize(pattern);
  // '*.' would otherwise lose its dot and become '*'
  if (/^\s*\*\./.test(pattern) && !p.startsWith('*.'))
    throw new RangeError(`${what}: bad wildcard ${JSON.stringify(pattern)}`);
  if (p === '*') return { rank: 0, test: () => true };
  if (p.startsWith('*.')) {
    const suffix = p.slice(1); // '.example.com'
    if (suffix.length < 2 || suffix.slice(1).includes('*'))
      throw new RangeError(`${what}: bad wildcard ${JSON.stringify(pattern)}`);
    return { rank: suffix.length, test: (n) => n.endsWith(suffix) && n.length > suffix.length };
  }
  if (p === '' || p.includes('*'))
    throw new RangeError(`${what}: bad pattern ${JSON.stringify(pattern)} (exact, '*.suffix' or '*')`);
  return { rank: EXACT, test: (n) => n === p };
}

interface CompiledRule {
  domain?: Matcher;
  mx?: Matcher;
  index: number;
  rule: ShapingRule;
}

function checkPositive(v: number | undefined, what: string, integer: boolean): void {
  if (v === undefined) return;
  if (!Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v)))
    throw new RangeError(`${what} must be ${integer ? 'an integer >= 1' : 'a number > 0'}, got ${v}`);
}

function checkLimits(r: Partial<DestinationLimits>, what: string): void {
  checkPositive(r.maxConnections, `${what}.maxConnections`, true);
  checkPositive(r.messagesPerConnection, `${what}.messagesPerConnection`, true);
  checkPositive(r.messagesPerSecond, `${what}.messagesPerSecond`, false);
}

function compileRules(rules: ShapingRule[], what: string): CompiledRule[] {
  return rules.map((rule, index) => {
    const w = `${what}[${index}]`;
    if (rule.domain === undefined && rule.mx === undefined)
      throw new RangeError(`${w}: needs a domain or an mx pattern`);
    checkLimits(rule, w);
    return {
      domain: rule.domain === undefined ? undefined : compilePattern(rule.domain, `${w}.domain`),
      mx: rule.mx === undefined ? undefined : compilePattern(rule.mx, `${w}.mx`),
      index,
      rule,
    };
  });
}

/** The rules of one tier that match, best first (see the module comment). */
function matching(rules: CompiledRule[], domain: string, mx: string | undefined): ShapingRule[] {
  const hits = rules.filter(
    (r) => (!r.domain || r.domain.test(domain)) && (!r.mx || (mx !== undefined && r.mx.test(mx))),
  );
  hits.sort(
    (a, b) =>
      (b.domain?.rank ?? -1) - (a.domain?.rank ?? -1) ||
      (b.mx?.rank ?? -1) - (a.mx?.rank ?? -1) ||
      a.index - b.index,
  );
  return hits.map((r) => r.rule);
}

/** The rules of one tier that match a static route's host: `mx`-only rules, best first. */
function matchingHost(rules: CompiledRule[], host: string): ShapingRule[] {
  const hits = rules.filter((r) => !r.domain && r.mx?.test(host));
  hits.sort((a, b) => b.mx!.rank - a.mx!.rank || a.index - b.index);
  return hits.map((r) => r.rule);
}

const BUILTIN_COMPILED = compileRules(BUILTIN_RULES, 'BUILTIN_RULES');
const CACHE_MAX = 10_000;
const FIELDS = ['maxConnections', 'messagesPerConnection', 'messagesPerSecond'] as const;

interface Bucket {
  tokens: number;
  at: number;
  /** When the bucket will be full again (it can then be dropped and recreated full). */
  fullAt: number;
}

interface Backoff {
  level: number;
  until: number;
}

function checkConfig(cfg: ShapingConfig): CompiledRule[] {
  checkLimits(cfg.defaults, 'shaping.defaults');
  if (cfg.defaults.maxConnections === undefined || cfg.defaults.messagesPerConnection === undefined)
    throw new RangeError('shaping.defaults needs maxConnections and messagesPerConnection');
  const { initialMs, maxMs } = cfg.backoff;
  if (!Number.isFinite(initialMs) || initialMs <= 0)
    throw new RangeError(`shaping.backoff.initialMs must be > 0, got ${initialMs}`);
  if (!Number.isFinite(maxMs) || maxMs < initialMs)
    throw new RangeError(`shaping.backoff.maxMs must be >= initialMs, got ${maxMs}`);
  return compileRules(cfg.rules, 'shaping.rules');
}

export class Shaper {
  private cfg: ShapingConfig;
  private rules: CompiledRule[];
  private readonly cache = new Map<string, DestinationLimits>();
  private readonly buckets = new Map<string, Bucket>();
  private readonly backoffs = new Map<string, Backoff>();

  /** @throws RangeError on an invalid configuration. */
  constructor(
    cfg: ShapingConfig,
    private readonly now: () => number,
  ) {
    this.rules = checkConfig(cfg);
    this.cfg = cfg;
  }

  /** Hot reload: new rules and defaults; rate buckets and back-offs carry on. */
  reconfigure(cfg: ShapingConfig): void {
    this.rules = checkConfig(cfg);
    this.cfg = cfg;
    this.cache.clear();
  }

  /**
   * The limits for MX delivery to a recipient domain, optionally reached through MX host `mxHost`
   * (cached, frozen).
   */
  limitsFor(domain: string, mxHost?: string): DestinationLimits {
    const d = normalize(domain);
    const mx = mxHost === undefined ? undefined : normalize(mxHost);
    const key = mx === undefined ? d : `${d}\0${mx}`;
    return this.cached(key, () => [
      matching(this.rules, d, mx),
      this.cfg.builtins === false ? [] : matching(BUILTIN_COMPILED, d, mx),
    ]);
  }

  /**
   * The limits for a static route's host (a smarthost or a domain route), which carries mail for many
   * recipient domains: only rules without a `domain` apply, their `mx` pattern matched against the host
   * (cached, frozen).
   */
  limitsForHost(host: string): DestinationLimits {
    const h = normalize(host);
    return this.cached(`\0${h}`, () => [
      matchingHost(this.rules, h),
      this.cfg.builtins === false ? [] : matchingHost(BUILTIN_COMPILED, h),
    ]);
  }

  private cached(key: string, rules: () => [user: ShapingRule[], builtin: ShapingRule[]]): DestinationLimits {
    const hit = this.cache.get(key);
    if (hit) return hit;
    const defaults = this.cfg.defaults;
    const out: DestinationLimits = {
      maxConnections: defaults.maxConnections,
      messagesPerConnection: defaults.messagesPerConnection,
    };
    if (defaults.messagesPerSecond !== undefined) out.messagesPerSecond = defaults.messagesPerSecond;
    const [user, builtin] = rules();
    for (const f of FIELDS) {
      const u = user.find((r) => r[f] !== undefined)?.[f];
      if (u !== undefined) {
        out[f] = u;
        continue;
      }
      const b = builtin.find((r) => r[f] !== undefined)?.[f];
      if (b !== undefined) out[f] = Math.min(b, defaults[f] ?? Infinity);
    }
    if (this.cache.size >= CACHE_MAX) this.cache.clear();
    // Shared between callers through the cache: frozen so that nobody changes it for everyone.
    this.cache.set(key, Object.freeze(out));
    return out;
  }

  /**
   * Takes one send from `key`'s token bucket: `messagesPerSecond` tokens per second, holding at most
   * one second's worth (and at least one token), full at first. Without a rate, always ok.
   */
  takeSend(key: string, limits: DestinationLimits): { ok: true } | { ok: false; waitMs: number } {
    const rate = limits.messagesPerSecond;
    if (rate === undefined || !(rate > 0)) return { ok: true };
    const capacity = Math.max(1, rate);
    const t = this.now();
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size >= CACHE_MAX) this.sweepBuckets(t);
      this.buckets.set(key, (b = { tokens: capacity, at: t, fullAt: t }));
    } else {
      // A clock that went backwards adds nothing.
      b.tokens = Math.min(capacity, b.tokens + (Math.max(0, t - b.at) * rate) / 1000);
      b.at = t;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      b.fullAt = t + Math.ceil(((capacity - b.tokens) * 1000) / rate);
      return { ok: true };
    }
    return { ok: false, waitMs: Math.ceil(((1 - b.tokens) * 1000) / rate) };
  }

  /**
   * Backs `key` off after a throttle reply: `initialMs`, doubling with each further throttle up to
   * `maxMs`, until a success. Throttles that arrive while the back-off is running (other connections
   * to the same destination failing at the same time) do not escalate it. A back-off that ended more
   * than `maxMs` ago is forgotten, so an old throttle does not punish a destination forever.
   * Returns the end of the back-off (epoch ms).
   */
  onThrottle(key: string): number {
    const t = this.now();
    const { initialMs, maxMs } = this.cfg.backoff;
    const cur = this.backoffs.get(key);
    if (cur && t < cur.until) return cur.until;
    const level = cur && t - cur.until <= maxMs ? cur.level + 1 : 1;
    const delay = Math.min(maxMs, initialMs * 2 ** Math.min(level - 1, 52));
    if (!cur && this.backoffs.size >= CACHE_MAX) this.sweepBackoffs(t);
    const until = t + delay;
    this.backoffs.set(key, { level, until });
    return until;
  }

  /** A successful transaction ends `key`'s back-off and resets its escalation. */
  onSuccess(key: string): void {
    this.backoffs.delete(key);
  }

  /** The end of `key`'s running back-off, or undefined when it is not backed off. */
  backoffUntil(key: string): number | undefined {
    const b = this.backoffs.get(key);
    return b && this.now() < b.until ? b.until : undefined;
  }

  private sweepBuckets(t: number): void {
    for (const [k, b] of this.buckets) if (t >= b.fullAt) this.buckets.delete(k);
  }

  private sweepBackoffs(t: number): void {
    const maxMs = this.cfg.backoff.maxMs;
    for (const [k, b] of this.backoffs) if (t - b.until > maxMs) this.backoffs.delete(k);
  }
}
