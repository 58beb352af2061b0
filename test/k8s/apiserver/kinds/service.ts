import { invalid } from '../errors.js';
import { isObject, type KObject } from '../objects.js';
import { ageCol, col, get, list, selector } from './columns.js';
import type { KindDescriptor, StrategyContext } from './descriptor.js';
import { kindSchema, open } from './schema.js';

/** Service defaults; cluster IPs are allocated at create and may not change afterwards. */
function defaultService(obj: KObject, old: KObject | undefined, ips: StrategyContext['clusterIps']): void {
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

function servicePorts(o: KObject | Record<string, unknown>): string {
  const ports = list(o, 'spec', 'ports');
  if (ports.length === 0) return '<none>';
  return ports
    .map((p) => {
      const node = get(p, 'nodePort');
      return `${String(get(p, 'port'))}${node ? `:${String(node)}` : ''}/${String(get(p, 'protocol') ?? 'TCP')}`;
    })
    .join(',');
}

export const service: KindDescriptor = {
  group: '',
  version: 'v1',
  kind: 'Service',
  resource: { shortNames: ['svc'], categories: ['all'], status: true },
  schema: kindSchema('Service is a named abstraction of software service.', {
    spec: open('ServiceSpec (not modelled in detail)'),
    status: open(),
  }),
  columns: [
    col('Type', 'string', (o) => get(o, 'spec', 'type') ?? 'ClusterIP'),
    col('Cluster-IP', 'string', (o) => get(o, 'spec', 'clusterIP') ?? '<none>'),
    col('External-IP', 'string', (o) => {
      const ips = get(o, 'spec', 'externalIPs');
      return Array.isArray(ips) && ips.length ? ips.join(',') : '<none>';
    }),
    col('Port(s)', 'string', servicePorts),
    ageCol,
    col('Selector', 'string', (o) => selector(get(o, 'spec', 'selector')), 1),
  ],
  merge: {
    lists: { 'spec.ports': { mergeKey: 'port', keys: ['port', 'protocol'], defaults: { protocol: 'TCP' } } },
    atomicMaps: ['spec.selector'],
  },
  strategy: { names: 'label', prepare: (obj, old, _op, ctx) => defaultService(obj, old, ctx.clusterIps) },
};
