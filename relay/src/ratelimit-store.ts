/**
 * Fleet-wide tenant rate limits kept in Redis (docs/adr/009-fleet-rate-limits.md).
 *
 * Every replica of a fleet asks the same Redis on every RCPT: one Lua script checks every limit of the
 * tenant and takes from all of them, or from none, atomically, on Redis's clock. The limits are the
 * configured, fleet-wide figures (no share): per-second and per-minute limits are token buckets of
 * capacity `burst ?? count` refilled at `count` per period, hour and day limits are windows aligned to
 * UTC hours and days, exactly as the local RateLimiter counts them.
 *
 * When Redis cannot answer within the deadline, `take` rejects (a RespError) and the caller falls back to
 * its local share (TenantRuntime). Nothing here waits longer than the deadline.
 */
import { createHash } from 'node:crypto';
import {
  RATE_UNIT_MS,
  formatRateSpec,
  type RateSpec,
  type TakeResult,
  type WindowUsage,
} from './ratelimit.js';
import { RespClient, RespError, type RespValue } from './resp.js';

export interface RateLimitStoreConfig {
  type: 'redis';
  host: string;
  port: number;
  password?: string;
  username?: string;
  keyPrefix: string;
  timeoutMs: number;
  maxInFlight: number;
}

/**
 * KEYS: one hash per limit. ARGV: n, peek (1: compute only), then per limit period-ms, count, capacity.
 * Buckets store {a = last refill (ms), b = level in token-ms}; windows store {a = window start, b = used}.
 * Returns {ok, index of the blocking limit that frees up last, wait ms, now, then used and resetsAt per limit}.
 */
export const TAKE_SCRIPT = `
local n = tonumber(ARGV[1])
local peek = ARGV[2] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local st = {}
local blocked = false
local worst, wait = 0, 0
for i = 1, #KEYS do
  local base = 3 + (i - 1) * 3
  local period = tonumber(ARGV[base])
  local count = tonumber(ARGV[base + 1])
  local cap = tonumber(ARGV[base + 2])
  local h = redis.call('HMGET', KEYS[i], 'a', 'b')
  local a, b = tonumber(h[1]), tonumber(h[2])
  local room, w
  if period >= 3600000 then
    local start = now - (now % period)
    local used = 0
    if a == start and b then used = b end
    st[i] = {start, used, period, count, 1}
    room = used + n <= count
    w = start + period - now
  else
    local capU = cap * period
    local level, last = capU, now
    if a and b then
      level = b
      last = a
      if now > last then
        level = level + (now - last) * count
        last = now
      end
      if level > capU then level = capU end
    end
    st[i] = {last, level, period, count, 0, capU}
    room = level >= n * period
    local need = math.min(n, cap) * period - level
    w = math.ceil(need / count)
  end
  if not room then
    blocked = true
    if w < 1 then w = 1 end
    if w > wait then wait = w; worst = i end
  end
end
local take = (not blocked) and (not peek) and n > 0
local out = {blocked and 0 or 1, worst, wait, now}
for i = 1, #KEYS do
  local s = st[i]
  if s[5] == 1 then
    local used = s[2]
    if take then
      used = used + n
      redis.call('HSET', KEYS[i], 'a', s[1], 'b', used)
      redis.call('PEXPIRE', KEYS[i], s[1] + s[3] - now + 60000)
    end
    table.insert(out, used)
    table.insert(out, s[1] + s[3])
  else
    local level = s[2]
    if take then
      level = level - n * s[3]
      redis.call('HSET', KEYS[i], 'a', s[1], 'b', level)
      redis.call('PEXPIRE', KEYS[i], math.ceil((s[6] - level) / s[4]) + 1000)
    end
    local deficit = s[6] - level
    table.insert(out, math.ceil(deficit / s[3]))
    table.insert(out, now + math.ceil(deficit / s[4]))
  end
end
return out
`;

const SCRIPT_SHA = createHash('sha1').update(TAKE_SCRIPT).digest('hex');

/** The Redis key of one tenant limit; the hash tag keeps a tenant's keys in one Redis Cluster slot. */
export function limitKey(prefix: string, tenant: string, unit: string): string {
  return `${prefix}rl:{${tenant}}:${unit}`;
}

/** The script's arguments for `limits` (fleet-wide figures). */
export function scriptArgs(
  limits: RateSpec[],
  burst: number | undefined,
  n: number,
  peek: boolean,
): string[] {
  const args = [String(n), peek ? '1' : '0'];
  for (const l of limits) {
    const window = l.unit === 'h' || l.unit === 'd';
    args.push(String(RATE_UNIT_MS[l.unit]), String(l.count), String(window ? l.count : (burst ?? l.count)));
  }
  return args;
}

/** Reads the script's reply: the take result and the fleet-wide state of every limit. */
export function parseScriptReply(
  v: RespValue,
  limits: RateSpec[],
): { result: TakeResult; usage: WindowUsage[] } {
  if (!Array.isArray(v) || v.length !== 4 + 2 * limits.length || !v.every((x) => typeof x === 'number'))
    throw new RespError('reply', `unexpected script reply ${JSON.stringify(v)}`);
  const [ok, worst, wait, now] = v as number[];
  const usage = limits.map((l, i): WindowUsage => {
    const used = v[4 + 2 * i] as number;
    const resetsAt = v[5 + 2 * i] as number;
    const window = l.unit === 'h' || l.unit === 'd';
    return {
      unit: l.unit,
      limit: l.count,
      used,
      windowStart: window ? resetsAt - RATE_UNIT_MS[l.unit] : now,
      resetsAt,
    };
  });
  const result: TakeResult =
    ok === 1
      ? { ok: true }
      : { ok: false, limit: formatRateSpec(limits[worst - 1] ?? limits[0]), retryAfterMs: wait };
  return { result, usage };
}

export class RedisRateStore {
  private readonly client: RespClient;
  private scriptLoaded = false;

  constructor(
    readonly cfg: RateLimitStoreConfig,
    onState?: (up: boolean, why?: string) => void,
  ) {
    this.client = new RespClient({
      host: cfg.host,
      port: cfg.port,
      ...(cfg.password !== undefined ? { password: cfg.password } : {}),
      ...(cfg.username !== undefined ? { username: cfg.username } : {}),
      timeoutMs: cfg.timeoutMs,
      maxInFlight: cfg.maxInFlight,
      onState: (up, why) => {
        if (!up) this.scriptLoaded = false; // a restarted Redis has lost its script cache
        onState?.(up, why);
      },
    });
  }

  get connected(): boolean {
    return this.client.connected;
  }

  /** Takes `n` from every limit of `tenant`, fleet-wide. Rejects (RespError) when the store cannot answer. */
  async take(tenant: string, limits: RateSpec[], burst: number | undefined, n = 1): Promise<TakeResult> {
    if (!limits.length) return { ok: true };
    return (await this.run(tenant, limits, burst, n, false)).result;
  }

  /** The fleet-wide state of every limit of `tenant`, without taking anything. */
  async usage(tenant: string, limits: RateSpec[], burst: number | undefined): Promise<WindowUsage[]> {
    if (!limits.length) return [];
    return (await this.run(tenant, limits, burst, 0, true)).usage;
  }

  close(): void {
    this.client.close();
  }

  private async run(
    tenant: string,
    limits: RateSpec[],
    burst: number | undefined,
    n: number,
    peek: boolean,
  ): Promise<{ result: TakeResult; usage: WindowUsage[] }> {
    const keys = limits.map((l) => limitKey(this.cfg.keyPrefix, tenant, l.unit));
    const args = [String(keys.length), ...keys, ...scriptArgs(limits, burst, n, peek)];
    let v = this.scriptLoaded ? await this.client.command(['EVALSHA', SCRIPT_SHA, ...args]) : undefined;
    if (v === undefined || (v instanceof Error && v.message.startsWith('NOSCRIPT'))) {
      v = await this.client.command(['EVAL', TAKE_SCRIPT, ...args]);
      if (!(v instanceof Error)) this.scriptLoaded = true;
    }
    if (v instanceof Error) throw new RespError('reply', v.message);
    return parseScriptReply(v, limits);
  }
}
