/** The kinds the server serves: built-in resources (kinds/) and those registered by CustomResourceDefinitions. */
import { acceptedNames, type CrdNames } from './kinds/crd.js';
import { pluralOf, type KindDescriptor } from './kinds/descriptor.js';
import { SERVED } from './kinds/index.js';

export { acceptedNames, type CrdNames };

export interface ResourceType {
  group: string;
  /** Served versions, in the order the definition lists them. */
  versions: string[];
  /** The version objects are kept in (all served versions share one storage). */
  storageVersion: string;
  plural: string;
  singular: string;
  kind: string;
  listKind: string;
  namespaced: boolean;
  shortNames: string[];
  categories: string[];
  /** Whether `<plural>/status` is served; the main endpoint then ignores status changes. */
  statusSubresource: boolean;
  /** Whether `<plural>/scale` is served, and where replicas live. */
  scale?: { specReplicasPath: string; statusReplicasPath: string; labelSelectorPath?: string };
  /** Subresources besides status and scale, with their verbs (`pods/log`: get). */
  otherSubresources?: Record<string, string[]>;
  /** Set for kinds a CRD defines. */
  crd?: string;
}

export const VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];

export function apiVersionOf(group: string, version: string): string {
  return group ? `${group}/${version}` : version;
}

/** Storage key of a resource: one per (group, plural) across versions. */
export function resourceKey(group: string, plural: string): string {
  return `${group}/${plural}`;
}

function fromDescriptor(d: KindDescriptor): ResourceType {
  const r = d.resource ?? {};
  const t: ResourceType = {
    group: d.group,
    versions: [d.version],
    storageVersion: d.version,
    plural: r.plural ?? pluralOf(d.kind),
    singular: d.kind.toLowerCase(),
    kind: d.kind,
    listKind: `${d.kind}List`,
    namespaced: r.namespaced ?? true,
    shortNames: r.shortNames ?? [],
    categories: r.categories ?? [],
    statusSubresource: r.status ?? false,
  };
  if (r.scale)
    t.scale = {
      specReplicasPath: '.spec.replicas',
      statusReplicasPath: '.status.replicas',
      labelSelectorPath: '.status.selector',
    };
  if (r.subresources) t.otherSubresources = r.subresources;
  return t;
}

/** The built-in resources, from the kind descriptors (kinds/). */
export function builtinResources(): ResourceType[] {
  return SERVED.filter((d) => d.resource).map(fromDescriptor);
}

/** Orders versions as Kubernetes does: GA > beta > alpha, higher numbers first, then others by name. */
export function compareVersions(a: string, b: string): number {
  const parse = (v: string) => {
    const m = /^v(\d+)(?:(alpha|beta)(\d+))?$/.exec(v);
    if (!m) return { rank: 0, major: 0, minor: 0 };
    const rank = m[2] === undefined ? 3 : m[2] === 'beta' ? 2 : 1;
    return { rank, major: Number(m[1]), minor: Number(m[3] ?? 0) };
  };
  const pa = parse(a);
  const pb = parse(b);
  if (pa.rank !== pb.rank) return pb.rank - pa.rank;
  if (pa.rank === 0) return a.localeCompare(b);
  if (pa.major !== pb.major) return pb.major - pa.major;
  return pb.minor - pa.minor;
}

interface CrdVersion {
  name: string;
  served?: boolean;
  storage?: boolean;
  subresources?: {
    status?: unknown;
    scale?: { specReplicasPath: string; statusReplicasPath: string; labelSelectorPath?: string };
  };
}

/** The resource a CRD object defines (spec assumed validated). */
export function fromCrd(crd: { metadata: { name?: string }; spec: Record<string, unknown> }): ResourceType {
  const spec = crd.spec as { group: string; scope: string; names: CrdNames; versions: CrdVersion[] };
  const served = spec.versions.filter((v) => v.served !== false);
  const storage = spec.versions.find((v) => v.storage) ?? spec.versions[0];
  const names = acceptedNames(spec.names);
  const t: ResourceType = {
    group: spec.group,
    versions: served.map((v) => v.name),
    storageVersion: storage.name,
    plural: names.plural,
    singular: names.singular,
    kind: names.kind,
    listKind: names.listKind,
    namespaced: spec.scope !== 'Cluster',
    shortNames: names.shortNames,
    categories: names.categories,
    statusSubresource: storage.subresources?.status !== undefined,
    crd: crd.metadata.name,
  };
  if (storage.subresources?.scale) t.scale = storage.subresources.scale;
  return t;
}

/** The set of served resources, looked up by group/version and plural. */
export class Registry {
  private readonly byKey = new Map<string, ResourceType>();

  constructor(types: ResourceType[] = builtinResources()) {
    for (const t of types) this.add(t);
  }

  add(t: ResourceType): void {
    this.byKey.set(resourceKey(t.group, t.plural), t);
  }

  remove(group: string, plural: string): void {
    this.byKey.delete(resourceKey(group, plural));
  }

  all(): ResourceType[] {
    return [...this.byKey.values()];
  }

  /** The resource `plural` served at group/version, or undefined. */
  find(group: string, version: string, plural: string): ResourceType | undefined {
    const t = this.byKey.get(resourceKey(group, plural));
    return t && t.versions.includes(version) ? t : undefined;
  }

  byGroupKind(group: string, kind: string): ResourceType | undefined {
    return this.all().find((t) => t.group === group && t.kind === kind);
  }

  /** Groups with their served versions, preferred (highest priority) version first. */
  groups(): Map<string, string[]> {
    const groups = new Map<string, Set<string>>();
    for (const t of this.all()) {
      const set = groups.get(t.group) ?? new Set<string>();
      for (const v of t.versions) set.add(v);
      groups.set(t.group, set);
    }
    const out = new Map<string, string[]>();
    for (const [g, vs] of groups) out.set(g, [...vs].sort(compareVersions));
    return out;
  }

  inGroupVersion(group: string, version: string): ResourceType[] {
    return this.all().filter((t) => t.group === group && t.versions.includes(version));
  }
}
