/**
 * The first admission step (what kube-apiserver's strategies do): names, labels and MicroTime fields
 * for every kind, then the kind's own validation and defaults (its descriptor's `strategy`, kinds/).
 * Service cluster IPs are allocated here.
 */
import { ApiError, badRequest, invalid, type StatusCause } from './errors.js';
import { descriptorOf, type Strategy, type StrategyContext } from './kinds/index.js';
import { isObject, type KObject } from './objects.js';
import type { ResourceType } from './resources.js';
import type { AdmitFn } from './store.js';

export { CRD_CLEANUP_FINALIZER } from './kinds/crd.js';
/** Service cluster IPs (DESIGN.md §5); tests running in parallel pass a range of their own. */
export const DEFAULT_SERVICE_RANGE = '127.0.2.0/24';

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function nameCauses(name: string | undefined, rule: Strategy['names']): StatusCause[] {
  if (!name)
    return [
      {
        reason: 'FieldValueRequired',
        message: 'Required value: name or generateName is required',
        field: 'metadata.name',
      },
    ];
  const label = rule === 'label';
  if (rule === 'path-segment') {
    if (name === '.' || name === '..' || /[/%]/.test(name))
      return [
        {
          reason: 'FieldValueInvalid',
          message: `Invalid value: "${name}": may not contain '/' or '%'`,
          field: 'metadata.name',
        },
      ];
    return [];
  }
  const ok = label
    ? name.length <= 63 && DNS_LABEL.test(name)
    : name.length <= 253 && DNS_SUBDOMAIN.test(name);
  if (ok) return [];
  const what = label ? 'a lowercase RFC 1123 label' : 'a lowercase RFC 1123 subdomain';
  return [
    {
      reason: 'FieldValueInvalid',
      message: `Invalid value: "${name}": must be ${what} (lowercase alphanumerics, '-'${label ? '' : " or '.'"}, starting and ending with an alphanumeric)`,
      field: 'metadata.name',
    },
  ];
}

function labelCauses(obj: KObject): StatusCause[] {
  const causes: StatusCause[] = [];
  for (const [field, map] of [
    ['metadata.labels', obj.metadata.labels],
    ['metadata.annotations', obj.metadata.annotations],
  ] as const) {
    if (map === undefined || map === null) continue;
    if (!isObject(map) || Object.values(map).some((v) => typeof v !== 'string'))
      causes.push({ reason: 'FieldValueInvalid', message: 'Invalid value: values must be strings', field });
  }
  return causes;
}

const ipToInt = (ip: string): number => ip.split('.').reduce((n, part) => n * 256 + Number(part), 0);
const intToIp = (n: number): string => [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** Parses an IPv4 CIDR (`127.0.2.0/24`) into its first and last host address (as integers). */
export function parseIpv4Cidr(cidr: string): { first: number; last: number } {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(cidr);
  const bits = Number(m?.[2]);
  if (!m || !IPV4.test(m[1]) || bits > 32) throw new Error(`not an IPv4 CIDR: ${cidr}`);
  const size = 2 ** (32 - bits);
  const base = Math.floor(ipToInt(m[1]) / size) * size;
  // Network and broadcast addresses are not handed out (unless the range is that small).
  return size > 2 ? { first: base + 1, last: base + size - 2 } : { first: base, last: base + size - 1 };
}

/**
 * Allocates Service cluster IPs from a range (default 127.0.2.0/24, the test address plan), as
 * kube-apiserver's allocator does: an address named by the Service must lie in the range and be free;
 * otherwise the next free one after the last handed out (so a released address is not reused at once).
 * Which addresses are taken is read from the stored Services (`inUse`).
 */
export class ClusterIpAllocator {
  private readonly first: number;
  private readonly last: number;
  private next: number;

  constructor(
    readonly range: string,
    private readonly inUse: () => Iterable<string>,
  ) {
    ({ first: this.first, last: this.last } = parseIpv4Cidr(range));
    this.next = this.first;
  }

  allocate(): string {
    const taken = new Set(this.inUse());
    const size = this.last - this.first + 1;
    for (let i = 0; i < size; i++) {
      const n = this.first + ((this.next - this.first + i) % size);
      const ip = intToIp(n);
      if (taken.has(ip)) continue;
      this.next = n === this.last ? this.first : n + 1;
      return ip;
    }
    throw new ApiError(
      500,
      'InternalError',
      'Internal error occurred: failed to allocate a serviceIP: range is full',
    );
  }

  /** Why `ip` cannot be given to a new Service (undefined when it can). */
  refuse(ip: string): string | undefined {
    if (!IPV4.test(ip)) return 'must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)';
    const n = ipToInt(ip);
    if (n < this.first || n > this.last)
      return `failed to allocate IP ${ip}: the provided IP (${ip}) is not in the valid range. The range of valid IPs is ${this.range}`;
    if (new Set(this.inUse()).has(ip)) return `failed to allocate IP ${ip}: provided IP is already allocated`;
    return undefined;
  }
}

const RFC3339_MICRO = '2006-01-02T15:04:05.000000Z07:00';
const MICRO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$/;

/** Go's time.Parse error for a MicroTime that is not RFC 3339 with exactly six fractional digits. */
function microTimeError(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') return `json: cannot unmarshal ${typeof value} into Go value of type string`;
  if (MICRO_TIME.test(value)) return undefined;
  const why = (elem: string, layoutElem: string) =>
    `parsing time ${JSON.stringify(value)} as "${RFC3339_MICRO}": cannot parse ${JSON.stringify(elem)} as "${layoutElem}"`;
  const head = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/.exec(value);
  if (!head) return why(value, RFC3339_MICRO);
  const rest = value.slice(head[0].length);
  if (!/^\.\d{6}/.test(rest)) return why(rest, '.000000');
  return why(rest.slice(7), 'Z07:00');
}

/**
 * kube-apiserver decodes MicroTime fields with the layout RFC3339Micro, so a time without exactly six
 * fractional digits (JavaScript's `Date#toISOString()` has three) fails decoding with a 400.
 */
function checkMicroTimes(t: ResourceType, obj: KObject): void {
  for (const path of descriptorOf(t.group, t.kind)?.strategy?.microTimeFields ?? []) {
    let value: unknown = obj;
    for (const p of path) value = isObject(value) ? value[p] : undefined;
    const err = microTimeError(value);
    if (err) throw badRequest(`${t.kind} in version "v1" cannot be handled as a ${t.kind}: ${err}`);
  }
}

/** The built-in admission step: names, labels, MicroTimes, then the kind's strategy (checks, defaults). */
export function builtinAdmission(
  opts: {
    /** Where Service cluster IPs come from (default 127.0.2.0/24). */
    serviceClusterIpRange?: string;
    /** The cluster IPs stored Services hold. */
    clusterIpsInUse?: () => Iterable<string>;
  } = {},
): AdmitFn {
  const ips = new ClusterIpAllocator(
    opts.serviceClusterIpRange ?? DEFAULT_SERVICE_RANGE,
    opts.clusterIpsInUse ?? (() => []),
  );
  const ctx: StrategyContext = { clusterIps: ips };
  return (t, obj, old, op) => {
    if (!isObject(obj.metadata)) throw badRequest('metadata must be an object');
    checkMicroTimes(t, obj);
    const strategy = descriptorOf(t.group, t.kind)?.strategy;
    const causes = [
      ...(op === 'CREATE' ? nameCauses(obj.metadata.name, strategy?.names) : []),
      ...labelCauses(obj),
      ...(strategy?.validate?.(obj) ?? []),
      ...(old && strategy?.validateUpdate ? strategy.validateUpdate(obj, old) : []),
    ];
    if (causes.length) throw invalid(t.kind, obj.metadata.name ?? '', causes, t.group);
    strategy?.prepare?.(obj, old, op, ctx);
  };
}
