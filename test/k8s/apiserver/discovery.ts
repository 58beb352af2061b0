/** Discovery documents: /version, /api, /apis, /api/v1, /apis/<g>/<v>, and aggregated discovery (v2). */
import { apiVersionOf, VERBS, type Registry, type ResourceType } from './resources.js';

export const AGGREGATED_V2 = 'application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList';
export const AGGREGATED_V2BETA1 = 'application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList';

export function versionInfo(): Record<string, string> {
  return {
    major: '1',
    minor: '32',
    gitVersion: 'v1.32.0',
    gitCommit: '0000000000000000000000000000000000000000',
    gitTreeState: 'clean',
    buildDate: '2024-12-11T00:00:00Z',
    goVersion: 'go1.23.3',
    compiler: 'gc',
    platform: 'linux/amd64',
  };
}

const SUB_VERBS = ['get', 'patch', 'update'];

/** Served subresources: status and scale where the type has them, then others (`pods/log`). */
function subresources(t: ResourceType): string[] {
  const other = Object.keys(t.otherSubresources ?? {});
  return [...(t.statusSubresource ? ['status'] : []), ...(t.scale ? ['scale'] : []), ...other];
}

const subVerbs = (t: ResourceType, sub: string) => t.otherSubresources?.[sub] ?? SUB_VERBS;

function subKind(t: ResourceType, sub: string): { group: string; version: string; kind: string } {
  return sub === 'scale'
    ? { group: 'autoscaling', version: 'v1', kind: 'Scale' }
    : { group: t.group, version: '', kind: t.kind };
}

/** APIResourceList for one group/version. */
export function resourceList(registry: Registry, group: string, version: string): Record<string, unknown> {
  const resources: Record<string, unknown>[] = [];
  for (const t of registry.inGroupVersion(group, version).sort((a, b) => a.plural.localeCompare(b.plural))) {
    const r: Record<string, unknown> = {
      name: t.plural,
      singularName: t.singular,
      namespaced: t.namespaced,
      kind: t.kind,
      verbs: VERBS,
    };
    if (t.shortNames.length) r.shortNames = t.shortNames;
    if (t.categories.length) r.categories = t.categories;
    resources.push(r);
    for (const sub of subresources(t)) {
      const k = subKind(t, sub);
      const s: Record<string, unknown> = {
        name: `${t.plural}/${sub}`,
        singularName: '',
        namespaced: t.namespaced,
        kind: k.kind,
        verbs: subVerbs(t, sub),
      };
      if (sub === 'scale') Object.assign(s, { group: k.group, version: k.version });
      resources.push(s);
    }
  }
  return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: apiVersionOf(group, version), resources };
}

export function coreVersions(serverAddress: string): Record<string, unknown> {
  return {
    kind: 'APIVersions',
    versions: ['v1'],
    serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress }],
  };
}

function groupEntry(name: string, versions: string[]): Record<string, unknown> {
  const gv = (v: string) => ({ groupVersion: apiVersionOf(name, v), version: v });
  return { name, versions: versions.map(gv), preferredVersion: gv(versions[0]) };
}

/** APIGroupList: every named group (the core group is served at /api). */
export function groupList(registry: Registry): Record<string, unknown> {
  const groups = [...registry.groups()]
    .filter(([g]) => g !== '')
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([g, vs]) => groupEntry(g, vs));
  return { kind: 'APIGroupList', apiVersion: 'v1', groups };
}

export function group(registry: Registry, name: string): Record<string, unknown> | undefined {
  const versions = registry.groups().get(name);
  return versions && { kind: 'APIGroup', apiVersion: 'v1', ...groupEntry(name, versions) };
}

function aggregatedResource(t: ResourceType, version: string): Record<string, unknown> {
  const r: Record<string, unknown> = {
    resource: t.plural,
    responseKind: { group: t.group, version, kind: t.kind },
    scope: t.namespaced ? 'Namespaced' : 'Cluster',
    singularResource: t.singular,
    verbs: VERBS,
  };
  if (t.shortNames.length) r.shortNames = t.shortNames;
  if (t.categories.length) r.categories = t.categories;
  const subs = subresources(t).map((sub) => {
    const k = subKind(t, sub);
    return {
      subresource: sub,
      responseKind: { ...k, version: k.version || version },
      verbs: subVerbs(t, sub),
    };
  });
  if (subs.length) r.subresources = subs;
  return r;
}

/** APIGroupDiscoveryList for /api (core only) or /apis (named groups), in `apiVersion`. */
export function aggregated(registry: Registry, core: boolean, apiVersion: string): Record<string, unknown> {
  const items = [...registry.groups()]
    .filter(([g]) => (g === '') === core)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([g, versions]) => ({
      metadata: { name: g, creationTimestamp: null },
      versions: versions.map((v) => ({
        version: v,
        resources: registry
          .inGroupVersion(g, v)
          .sort((a, b) => a.plural.localeCompare(b.plural))
          .map((t) => aggregatedResource(t, v)),
        freshness: 'Current',
      })),
    }));
  return { kind: 'APIGroupDiscoveryList', apiVersion, metadata: {}, items };
}
