/** Per-kind defaulting and validation run as the first admission step (what kube-apiserver's strategies do). */
import { ApiError, badRequest, invalid, type StatusCause } from './errors.js';
import { isObject, jsonEqual, nowTimestamp, type KObject } from './objects.js';
import { acceptedNames, type CrdNames, type ResourceType } from './resources.js';
import type { AdmitFn } from './store.js';

export const CRD_CLEANUP_FINALIZER = 'customresourcecleanup.apiextensions.k8s.io';
/** Service cluster IPs (DESIGN.md §5); tests running in parallel pass a range of their own. */
export const DEFAULT_SERVICE_RANGE = '127.0.2.0/24';

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function nameCauses(t: ResourceType, name: string | undefined): StatusCause[] {
  if (!name)
    return [
      {
        reason: 'FieldValueRequired',
        message: 'Required value: name or generateName is required',
        field: 'metadata.name',
      },
    ];
  const label = t.group === '' && (t.kind === 'Namespace' || t.kind === 'Service');
  if (t.group === 'rbac.authorization.k8s.io') {
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

function defaultNamespace(obj: KObject): void {
  const name = obj.metadata.name ?? '';
  obj.metadata.labels = { ...obj.metadata.labels, 'kubernetes.io/metadata.name': name };
  const spec = (isObject(obj.spec) ? obj.spec : {}) as { finalizers?: string[] };
  spec.finalizers ??= ['kubernetes'];
  obj.spec = spec;
  if (!isObject(obj.status) || !obj.status.phase) obj.status = { phase: 'Active' };
}

function defaultSecret(obj: KObject): void {
  obj.type ??= 'Opaque';
  if (isObject(obj.stringData)) {
    const data = (isObject(obj.data) ? obj.data : {}) as Record<string, string>;
    for (const [k, v] of Object.entries(obj.stringData)) data[k] = Buffer.from(String(v)).toString('base64');
    obj.data = data;
  }
  delete obj.stringData;
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

/** Service defaults; cluster IPs are allocated at create and may not change afterwards. */
function defaultService(obj: KObject, old: KObject | undefined, ips: ClusterIpAllocator): void {
  const spec = (isObject(obj.spec) ? obj.spec : {}) as Record<string, unknown>;
  spec.type ??= 'ClusterIP';
  spec.sessionAffinity ??= 'None';
  const oldSpec = (old?.spec ?? {}) as Record<string, unknown>;
  const bad = (field: string, value: unknown, why: string) =>
    invalid('Service', obj.metadata.name ?? '', [
      { reason: 'FieldValueInvalid', message: `Invalid value: ${JSON.stringify(value)}: ${why}`, field },
    ]);
  if (spec.type === 'ExternalName') {
    delete spec.clusterIP;
    delete spec.clusterIPs;
  } else {
    const oldIp =
      old && oldSpec.type !== 'ExternalName' && typeof oldSpec.clusterIP === 'string' && oldSpec.clusterIP
        ? oldSpec.clusterIP
        : undefined;
    const given =
      (typeof spec.clusterIP === 'string' && spec.clusterIP) ||
      (Array.isArray(spec.clusterIPs) && typeof spec.clusterIPs[0] === 'string' && spec.clusterIPs[0]) ||
      undefined;
    if (oldIp && given && given !== oldIp)
      throw bad('spec.clusterIPs[0]', [given], 'may not change once set');
    let ip = given ?? oldIp;
    if (!ip) ip = ips.allocate();
    else if (ip !== 'None' && ip !== oldIp) {
      const why = ips.refuse(ip);
      if (why) throw bad('spec.clusterIPs', [ip], why);
    }
    spec.clusterIP = ip;
    spec.clusterIPs = [ip];
    spec.ipFamilies ??= ['IPv4'];
    spec.ipFamilyPolicy ??= 'SingleStack';
    spec.internalTrafficPolicy ??= 'Cluster';
  }
  if (Array.isArray(spec.ports))
    for (const p of spec.ports as Record<string, unknown>[]) {
      p.protocol ??= 'TCP';
      p.targetPort ??= p.port;
    }
  obj.spec = spec;
}

function crdCauses(obj: KObject): StatusCause[] {
  const spec = obj.spec as Record<string, unknown> | undefined;
  const causes: StatusCause[] = [];
  const req = (field: string) =>
    causes.push({ reason: 'FieldValueRequired', message: 'Required value', field });
  if (!isObject(spec)) return [{ reason: 'FieldValueRequired', message: 'Required value', field: 'spec' }];
  const names = spec.names as CrdNames | undefined;
  if (typeof spec.group !== 'string' || !spec.group.includes('.'))
    causes.push({
      reason: 'FieldValueInvalid',
      message: 'Invalid value: should be a domain with at least one dot',
      field: 'spec.group',
    });
  if (!names?.plural) req('spec.names.plural');
  if (!names?.kind) req('spec.names.kind');
  if (spec.scope !== 'Namespaced' && spec.scope !== 'Cluster')
    causes.push({
      reason: 'FieldValueNotSupported',
      message: 'Unsupported value: supported values: "Cluster", "Namespaced"',
      field: 'spec.scope',
    });
  const versions = Array.isArray(spec.versions) ? (spec.versions as { storage?: boolean }[]) : [];
  if (!versions.length) req('spec.versions');
  else if (versions.filter((v) => v.storage).length !== 1)
    causes.push({
      reason: 'FieldValueInvalid',
      message: 'Invalid value: must have exactly one version marked as storage version',
      field: 'spec.versions',
    });
  if (
    names?.plural &&
    typeof spec.group === 'string' &&
    obj.metadata.name !== `${names.plural}.${spec.group}`
  )
    causes.push({
      reason: 'FieldValueInvalid',
      message: `Invalid value: "${obj.metadata.name}": must be spec.names.plural+"."+spec.group`,
      field: 'metadata.name',
    });
  return causes;
}

function crdStatus(obj: KObject, old: KObject | undefined): void {
  const spec = obj.spec as { names: CrdNames; versions: { name: string; storage?: boolean }[] };
  const now = nowTimestamp();
  const oldStatus = (old?.status ?? {}) as {
    conditions?: { type: string; lastTransitionTime?: string }[];
    storedVersions?: string[];
  };
  const since = (type: string) =>
    oldStatus.conditions?.find((c) => c.type === type)?.lastTransitionTime ?? now;
  const storage = spec.versions.find((v) => v.storage)?.name ?? spec.versions[0].name;
  obj.status = {
    conditions: [
      {
        type: 'NamesAccepted',
        status: 'True',
        reason: 'NoConflicts',
        message: 'no conflicts found',
        lastTransitionTime: since('NamesAccepted'),
      },
      {
        type: 'Established',
        status: 'True',
        reason: 'InitialNamesAccepted',
        message: 'the initial names have been accepted',
        lastTransitionTime: since('Established'),
      },
    ],
    acceptedNames: acceptedNames(spec.names),
    storedVersions: [...new Set([...(oldStatus.storedVersions ?? []), storage])],
  };
  if (!old)
    obj.metadata.finalizers = [...new Set([...(obj.metadata.finalizers ?? []), CRD_CLEANUP_FINALIZER])];
}

function defaultReplicas(obj: KObject): void {
  if (isObject(obj.spec) && obj.spec.replicas === undefined) obj.spec.replicas = 1;
}

const STS_MUTABLE = [
  'replicas',
  'ordinals',
  'template',
  'updateStrategy',
  'persistentVolumeClaimRetentionPolicy',
  'minReadySeconds',
];

/** Fields a real server refuses to change after create. */
function immutableCauses(t: ResourceType, obj: KObject, old: KObject): StatusCause[] {
  const forbidden = (field: string, message: string): StatusCause[] => [
    { reason: 'FieldValueForbidden', message, field },
  ];
  const spec = (o: KObject) => (isObject(o.spec) ? o.spec : {});
  if (t.group === '' && (t.kind === 'ConfigMap' || t.kind === 'Secret') && old.immutable === true) {
    const same =
      obj.immutable === true && jsonEqual(obj.data, old.data) && jsonEqual(obj.binaryData, old.binaryData);
    if (!same) return forbidden('data', 'Forbidden: field is immutable when `immutable` is set');
  }
  if (t.group === 'apps' && t.kind === 'StatefulSet') {
    const strip = (o: KObject) =>
      Object.fromEntries(Object.entries(spec(o)).filter(([k]) => !STS_MUTABLE.includes(k)));
    if (!jsonEqual(strip(obj), strip(old)))
      return forbidden(
        'spec',
        `Forbidden: updates to statefulset spec for fields other than ${STS_MUTABLE.map((f) => `'${f}'`).join(', ')} are forbidden`,
      );
  }
  if (t.group === 'apps' && !jsonEqual(spec(obj).selector, spec(old).selector))
    return [
      { reason: 'FieldValueInvalid', message: 'Invalid value: field is immutable', field: 'spec.selector' },
    ];
  return [];
}

const RFC3339_MICRO = '2006-01-02T15:04:05.000000Z07:00';
const MICRO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$/;

/** Fields of type metav1.MicroTime, by `group/kind`. */
const MICRO_TIME_FIELDS: Record<string, string[][]> = {
  'coordination.k8s.io/Lease': [
    ['spec', 'acquireTime'],
    ['spec', 'renewTime'],
  ],
  '/Event': [['eventTime'], ['series', 'lastObservedTime']],
  'events.k8s.io/Event': [['eventTime'], ['series', 'lastObservedTime']],
};

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
  for (const path of MICRO_TIME_FIELDS[`${t.group}/${t.kind}`] ?? []) {
    let value: unknown = obj;
    for (const p of path) value = isObject(value) ? value[p] : undefined;
    const err = microTimeError(value);
    if (err) throw badRequest(`${t.kind} in version "v1" cannot be handled as a ${t.kind}: ${err}`);
  }
}

/** The built-in admission step: names, per-kind defaults, CRD checks and status. */
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
  return (t, obj, old, op) => {
    if (!isObject(obj.metadata)) throw badRequest('metadata must be an object');
    checkMicroTimes(t, obj);
    const causes = [...(op === 'CREATE' ? nameCauses(t, obj.metadata.name) : []), ...labelCauses(obj)];
    if (t.group === 'apiextensions.k8s.io' && t.kind === 'CustomResourceDefinition')
      causes.push(...crdCauses(obj));
    if (old) causes.push(...immutableCauses(t, obj, old));
    if (causes.length) throw invalid(t.kind, obj.metadata.name ?? '', causes, t.group);
    if (t.group === '') {
      if (t.kind === 'Namespace') defaultNamespace(obj);
      if (t.kind === 'Secret') defaultSecret(obj);
      if (t.kind === 'Service') defaultService(obj, old, ips);
      if (t.kind === 'Pod' && op === 'CREATE') obj.status = { phase: 'Pending' };
    }
    if (t.group === 'apps') defaultReplicas(obj);
    if (t.group === 'apiextensions.k8s.io' && t.kind === 'CustomResourceDefinition') crdStatus(obj, old);
  };
}
