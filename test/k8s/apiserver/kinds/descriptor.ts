/**
 * What the server knows about one built-in kind, in one place: the served resource (discovery,
 * routing), its OpenAPI schema, its `kubectl get` columns, its strategic-merge list rules, its
 * protobuf message and its strategy (defaults and validation). Each kind's module under `kinds/`
 * exports one; `kinds/index.ts` lists them, and resources.ts, openapi.ts, openapi/tables.ts, patch.ts,
 * protobuf.ts and strategies.ts derive their tables from that list.
 */
import type { StatusCause } from '../errors.js';
import type { KObject } from '../objects.js';
import type { MessageSpec } from '../protobuf-messages.js';

export type Json = Record<string, unknown>;

/**
 * How a list merges. `mergeKey` is the strategic-merge-patch key; `keys` are the server-side-apply
 * keys (listMapKeys, default `[mergeKey]`) with `defaults` for keys the API server would default.
 * `set: true` is a merged list of primitives (SMP `patchStrategy: merge`, SSA `listType: set`).
 * Lists not in a table are atomic: replaced wholesale.
 */
export interface ListRule {
  mergeKey?: string;
  keys?: string[];
  defaults?: Json;
  set?: boolean;
}

/** One column of a built-in kind's Table (after Name). */
export interface Column {
  def: { name: string; type: string; format?: string; description: string; priority: number };
  cell: (o: Json, now: number) => unknown;
}

/** What a strategy hook may use besides the object. */
export interface StrategyContext {
  /** Service cluster IPs: the next free one, or why a named one cannot be had (undefined: it can). */
  clusterIps: { allocate(): string; refuse(ip: string): string | undefined };
}

/** Per-kind steps of the built-in admission step (kube-apiserver's strategies), all optional. */
export interface Strategy {
  /** How metadata.name is checked: an RFC 1123 subdomain (default), label, or a path segment (RBAC). */
  names?: 'subdomain' | 'label' | 'path-segment';
  /** Fields of type metav1.MicroTime (paths), which must carry exactly six fractional digits. */
  microTimeFields?: string[][];
  /** Validation at every write. */
  validate?(obj: KObject): StatusCause[];
  /** Validation of an update against the stored object (immutable fields). */
  validateUpdate?(obj: KObject, old: KObject): StatusCause[];
  /** Defaults and server-set fields, after validation passed; may throw an ApiError. */
  prepare?(obj: KObject, old: KObject | undefined, op: 'CREATE' | 'UPDATE', ctx: StrategyContext): void;
}

export interface KindDescriptor {
  group: string;
  version: string;
  kind: string;
  /** Served as a REST resource (absent: a kind only the patch or protobuf code knows). */
  resource?: {
    /** Default: the lower-case kind, pluralised (`-s`, `-es`, `-ies`). */
    plural?: string;
    /** Default true. */
    namespaced?: boolean;
    shortNames?: string[];
    /** `all` for what `kubectl get all` lists. */
    categories?: string[];
    /** `<plural>/status`. */
    status?: boolean;
    /** `<plural>/scale` at `.spec.replicas` / `.status.replicas` / `.status.selector`. */
    scale?: boolean;
    /** Other subresources and their verbs, e.g. `pods/log` (get). */
    subresources?: Record<string, string[]>;
  };
  /** The (permissive) OpenAPI v3 schema `/openapi/v3` publishes and `kubectl explain` reads. */
  schema?: Json;
  /** `kubectl get` columns after Name (Name and Age only when absent). */
  columns?: Column[];
  /** Name goes last, as a wide column (kubectl's Event table). */
  nameColumnLast?: boolean;
  /** Strategic merge patch and server-side apply: lists by path pattern (`spec.ports`,
   * `spec.template.spec.containers[].env`), and maps applied as a whole. */
  merge?: { lists?: Record<string, ListRule>; atomicMaps?: string[] };
  /** The protobuf message, when the server accepts the kind as `application/vnd.kubernetes.protobuf`. */
  protobuf?: MessageSpec;
  strategy?: Strategy;
}

/** The plural Kubernetes derives from a kind: ConfigMap -> configmaps, Ingress -> ingresses, Policy -> policies. */
export function pluralOf(kind: string): string {
  const lower = kind.toLowerCase();
  if (lower.endsWith('s')) return `${lower}es`;
  if (lower.endsWith('y')) return `${lower.slice(0, -1)}ies`;
  return `${lower}s`;
}
