/**
 * A Kubernetes API server for tests, in process: discovery, CRUD, watch, status/scale/log subresources,
 * CRDs, finalizers and garbage collection over an in-memory store. Real kubectl works against it.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { stringify as toYaml } from 'yaml';
import { makeTmpDir, removeTmpDir } from '../helpers/tmp.js';
import { ApiError, conflict, invalid } from './errors.js';
import {
  aggregated,
  AGGREGATED_V2,
  AGGREGATED_V2BETA1,
  coreVersions,
  group,
  groupList,
  resourceList,
  versionInfo,
} from './discovery.js';
import { handleResource, verbOf, type ResourceRequest, type Verb } from './handlers.js';
import { defaultPatchers } from './handlers.js';
import {
  decodeBody,
  defaultDecoders,
  readBody,
  sendError,
  sendJson,
  type BodyDecoder,
  type Patcher,
  type ServerContext,
  type TableRenderer,
} from './http.js';
import { handlePodLog, type PodLogSource } from './logs.js';
import type { KObject } from './objects.js';
import { fromCrd, Registry } from './resources.js';
import { installPatchers, installProtobuf, managedFieldsTracker } from './integrations.js';
import {
  openApiDocument,
  renderTable,
  validateCustomResourceBody,
  type ValidationMode,
} from './openapi-serve.js';
import { Store, type StoreEvent } from './store.js';
import { builtinAdmission, CRD_CLEANUP_FINALIZER, DEFAULT_SERVICE_RANGE } from './strategies.js';
import { celAdmission } from './cel-serve.js';

export interface RequestRecord {
  method: string;
  path: string;
  /** get, list, watch, create, update, patch, delete, deletecollection; '' for non-resource URLs. */
  verb: Verb | '';
  group: string;
  version: string;
  resource: string;
  subresource: string;
  namespace: string;
  name: string;
  user: string;
  /** The HTTP status answered (0 until the response is finished). */
  code: number;
}

export interface ApiServerOptions {
  /** Where the kubeconfig goes (default: a fresh directory under os.tmpdir(), removed on stop). */
  dir?: string;
  /** Events kept for watch replay (default 10 000). */
  eventLogSize?: number;
  /** Extra bearer tokens and the user each stands for. */
  tokens?: Record<string, string>;
  /**
   * The user of requests without credentials (default `admin`): kubectl 1.32 here does not send the
   * kubeconfig's bearer token to a plain-http server, so its requests arrive anonymous.
   */
  anonymousUser?: string;
  /** How often watches with allowWatchBookmarks get a BOOKMARK (default 30 s). */
  bookmarkIntervalMs?: number;
  /**
   * Where Service cluster IPs come from (kube-apiserver's `--service-cluster-ip-range`; default
   * 127.0.2.0/24). Test processes that run at the same time and proxy Services pick their own range.
   */
  serviceClusterIpRange?: string;
}

export interface ServiceAccountTokenOptions {
  /** The pod the token is bound to: it stops working when that pod is gone. */
  pod?: { name: string; uid: string };
  /** Lifetime (default: none for tokens the kubelet asks for; TokenRequest defaults to 3600). */
  expirationSeconds?: number;
  audiences?: string[];
}

export interface ApiServer {
  url: string;
  port: number;
  /** Path of a kubeconfig for user `admin`. */
  kubeconfig: string;
  /** The bearer token of `admin`. */
  token: string;
  requests: RequestRecord[];
  store: Store;
  registry: Registry;
  /** The range Service cluster IPs are allocated from. */
  serviceClusterIpRange: string;
  /**
   * Issues a bearer token for ServiceAccount `<namespace>/<name>` (which must exist): requests with it
   * are recorded as `system:serviceaccount:<namespace>:<name>`. Like a bound token it stops working
   * when the ServiceAccount (or the pod it is bound to) is deleted. Also served over HTTP as the
   * TokenRequest subresource (`kubectl create token`).
   */
  serviceAccountToken(namespace: string, name: string, opts?: ServiceAccountTokenOptions): string;
  /** Seams for other media types: body decoders (protobuf), patchers (JSON patch, SSA), Tables. */
  decoders: Map<string, BodyDecoder>;
  patchers: Map<string, Patcher>;
  setTableRenderer(renderer: TableRenderer | undefined): void;
  /**
   * Where `GET .../pods/<name>/log` (`kubectl logs`) reads container logs: the process kubelet
   * registers itself when it starts and unregisters when it stops. Without one every log is empty.
   */
  setPodLogSource(source: PodLogSource | undefined): void;
  /**
   * Test hook: ends every open watch stream, cleanly (`end`, as a real server does at its request
   * timeout or on a graceful shutdown) or by dropping the connection (`reset`, as a crash or a
   * network failure does); returns how many were open. `store.compact()` makes their resourceVersions expire.
   */
  closeWatches(how?: 'end' | 'reset'): number;
  stop(): Promise<void>;
}

/** Parses /api/v1/... and /apis/<g>/<v>/... resource URLs. */
export function parseResourcePath(pathname: string): ResourceRequest | undefined {
  const segs = pathname
    .split('/')
    .filter((s) => s !== '')
    .map(decodeURIComponent);
  let group: string;
  let version: string;
  let rest: string[];
  if (segs[0] === 'api' && segs.length >= 3) [group, version, rest] = ['', segs[1], segs.slice(2)];
  else if (segs[0] === 'apis' && segs.length >= 4) [group, version, rest] = [segs[1], segs[2], segs.slice(3)];
  else return undefined;
  const watchPath = rest[0] === 'watch';
  if (watchPath) rest = rest.slice(1);
  let namespace = '';
  const nsSubresource = rest.length === 3 && (rest[2] === 'status' || rest[2] === 'finalize');
  if (rest[0] === 'namespaces' && rest.length >= 3 && !nsSubresource) {
    namespace = rest[1];
    rest = rest.slice(2);
  }
  if (rest.length === 0 || rest.length > 3) return undefined;
  const [plural, name, subresource] = rest;
  return { group, version, plural, namespace, name, subresource, watchPath };
}

function userOf(
  req: IncomingMessage,
  tokens: Map<string, string>,
  anonymous: string,
  serviceAccount: (token: string) => string | undefined,
): string {
  const auth = req.headers.authorization ?? '';
  const m = /^Bearer\s+(.+)$/i.exec(auth);
  if (!m) return anonymous;
  const user = tokens.get(m[1].trim()) ?? serviceAccount(m[1].trim());
  if (!user) throw new ApiError(401, 'Unauthorized', 'Unauthorized');
  return user;
}

interface IssuedToken {
  user: string;
  namespace: string;
  saUid: string;
  pod?: { name: string; uid: string };
  /** ms since the epoch; undefined = no expiry. */
  expires?: number;
}

/**
 * ServiceAccount tokens: JWT-shaped (the claims a real bound token carries, a random signature), each
 * mapped to its identity; valid while the ServiceAccount (and the bound pod) still exist.
 */
function serviceAccountTokens(store: Store, registry: Registry) {
  const saT = registry.find('', 'v1', 'serviceaccounts')!;
  const podT = registry.find('', 'v1', 'pods')!;
  const issued = new Map<string, IssuedToken>();
  const uidOf = (t: typeof saT, ns: string, name: string) => {
    try {
      return store.get(t, ns, name).metadata.uid;
    } catch {
      return undefined;
    }
  };
  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  return {
    issue(namespace: string, name: string, opts: ServiceAccountTokenOptions = {}) {
      const sa = store.get(saT, namespace, name); // 404 when missing
      const iat = Math.floor(Date.now() / 1000);
      const exp = opts.expirationSeconds ? iat + opts.expirationSeconds : undefined;
      const user = `system:serviceaccount:${namespace}:${name}`;
      const claims = {
        aud: opts.audiences ?? ['https://kubernetes.default.svc.cluster.local'],
        exp: exp ?? iat + 365 * 86_400,
        iat,
        nbf: iat,
        iss: 'https://kubernetes.default.svc.cluster.local',
        jti: randomUUID(),
        sub: user,
        'kubernetes.io': {
          namespace,
          serviceaccount: { name, uid: sa.metadata.uid },
          ...(opts.pod ? { pod: { name: opts.pod.name, uid: opts.pod.uid } } : {}),
        },
      };
      const token = `${b64({ alg: 'RS256', kid: 'cartero-test' })}.${b64(claims)}.${randomBytes(32).toString('base64url')}`;
      issued.set(token, {
        user,
        namespace,
        saUid: sa.metadata.uid ?? '',
        pod: opts.pod,
        expires: exp && exp * 1000,
      });
      return {
        token,
        expirationTimestamp: new Date((exp ?? claims.exp) * 1000).toISOString().replace(/\.\d+Z$/, 'Z'),
      };
    },
    /** The identity of a token, or undefined when it is unknown or no longer valid. */
    user(token: string): string | undefined {
      const t = issued.get(token);
      if (!t) return undefined;
      const name = t.user.split(':')[3];
      const valid =
        (t.expires === undefined || Date.now() < t.expires) &&
        uidOf(saT, t.namespace, name) === t.saUid &&
        (!t.pod || uidOf(podT, t.namespace, t.pod.name) === t.pod.uid);
      return valid ? t.user : undefined;
    },
  };
}

/** POST .../serviceaccounts/<name>/token: a TokenRequest answered with a new token. */
async function handleTokenRequest(
  ctx: ServerContext,
  req: IncomingMessage,
  res: ServerResponse,
  rr: ResourceRequest,
  tokens: ReturnType<typeof serviceAccountTokens>,
): Promise<void> {
  const { store, registry } = ctx;
  const raw = await readBody(req);
  const body = (raw.length ? decodeBody(ctx, req, raw) : {}) as {
    spec?: {
      audiences?: string[];
      expirationSeconds?: number;
      boundObjectRef?: { kind?: string; name?: string; uid?: string; apiVersion?: string };
    };
  };
  const spec = body.spec ?? {};
  const expirationSeconds = spec.expirationSeconds ?? 3600;
  if (expirationSeconds < 600)
    throw invalid(
      'TokenRequest',
      rr.name ?? '',
      [
        {
          reason: 'FieldValueInvalid',
          message: `Invalid value: ${expirationSeconds}: may not specify a duration less than 10 minutes`,
          field: 'spec.expirationSeconds',
        },
      ],
      'authentication.k8s.io',
    );
  let pod: { name: string; uid: string } | undefined;
  const ref = spec.boundObjectRef;
  if (ref?.kind === 'Pod') {
    const p = store.get(registry.find('', 'v1', 'pods')!, rr.namespace, ref.name ?? '');
    if (ref.uid && ref.uid !== p.metadata.uid)
      throw conflict(
        { group: '', plural: 'pods' },
        ref.name ?? '',
        'the UID in the bound object reference does not match',
      );
    pod = { name: ref.name ?? '', uid: p.metadata.uid ?? '' };
  }
  const audiences = spec.audiences?.length ? spec.audiences : undefined;
  const { token, expirationTimestamp } = tokens.issue(rr.namespace, rr.name ?? '', {
    pod,
    expirationSeconds,
    audiences,
  });
  sendJson(res, 201, {
    kind: 'TokenRequest',
    apiVersion: 'authentication.k8s.io/v1',
    metadata: { name: rr.name, namespace: rr.namespace, creationTimestamp: null },
    spec: {
      audiences: audiences ?? ['https://kubernetes.default.svc.cluster.local'],
      expirationSeconds,
      boundObjectRef: ref ?? null,
    },
    status: { token, expirationTimestamp },
  });
}

function wantsAggregated(req: IncomingMessage): string | undefined {
  const accept = (req.headers.accept ?? '').replace(/\s+/g, '');
  for (const part of accept.split(',')) {
    if (part.startsWith(AGGREGATED_V2)) return AGGREGATED_V2;
    if (part.startsWith(AGGREGATED_V2BETA1)) return AGGREGATED_V2BETA1;
    if (part.startsWith('application/json') && !part.includes('as=')) return undefined;
  }
  return undefined;
}

/** Answers non-resource URLs (discovery, version, health); false when the path is not one. */
function handleNonResource(
  ctx: ServerContext,
  req: IncomingMessage,
  res: ServerResponse,
  pathname: string,
  address: string,
): boolean {
  const segs = pathname.split('/').filter((s) => s !== '');
  const agg = wantsAggregated(req);
  const reply = (body: unknown) => (sendJson(res, 200, body), true);
  if (pathname === '/version') return reply(versionInfo());
  if (pathname.startsWith('/openapi/v3')) {
    const doc = openApiDocument(pathname, ctx.registry, ctx.store);
    return doc ? reply(doc) : false;
  }
  if (['/healthz', '/livez', '/readyz'].includes(pathname)) {
    res.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok');
    return true;
  }
  if (pathname === '/api') {
    if (agg)
      return (
        sendJson(
          res,
          200,
          aggregated(ctx.registry, true, `apidiscovery.k8s.io/${agg.includes('v2beta1') ? 'v2beta1' : 'v2'}`),
          agg,
        ),
        true
      );
    return reply(coreVersions(address));
  }
  if (pathname === '/apis') {
    if (agg)
      return (
        sendJson(
          res,
          200,
          aggregated(
            ctx.registry,
            false,
            `apidiscovery.k8s.io/${agg.includes('v2beta1') ? 'v2beta1' : 'v2'}`,
          ),
          agg,
        ),
        true
      );
    return reply(groupList(ctx.registry));
  }
  if (segs[0] === 'api' && segs.length === 2 && segs[1] === 'v1')
    return reply(resourceList(ctx.registry, '', 'v1'));
  if (segs[0] === 'apis' && segs.length === 2) {
    const g = group(ctx.registry, segs[1]);
    return g ? reply(g) : false;
  }
  if (segs[0] === 'apis' && segs.length === 3 && ctx.registry.groups().get(segs[1])?.includes(segs[2]))
    return reply(resourceList(ctx.registry, segs[1], segs[2]));
  return false;
}

const NOT_FOUND = new ApiError(404, 'NotFound', 'the server could not find the requested resource');

async function route(
  ctx: ServerContext,
  req: IncomingMessage,
  res: ServerResponse,
  record: RequestRecord,
  address: string,
  tokens: ReturnType<typeof serviceAccountTokens>,
): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://localhost');
  const method = req.method ?? 'GET';
  const rr = parseResourcePath(url.pathname);
  if (!rr) {
    if (method === 'GET' && handleNonResource(ctx, req, res, url.pathname, address)) return;
    throw NOT_FOUND;
  }
  const verb = verbOf(method, rr, url.searchParams);
  Object.assign(record, {
    verb: verb ?? '',
    group: rr.group,
    version: rr.version,
    resource: rr.plural,
    subresource: rr.subresource ?? '',
    namespace: rr.namespace,
    name: rr.name ?? '',
  });
  const t = ctx.registry.find(rr.group, rr.version, rr.plural);
  if (!t) throw NOT_FOUND;
  if (
    t.kind === 'ServiceAccount' &&
    rr.group === '' &&
    rr.subresource === 'token' &&
    rr.name &&
    method === 'POST'
  ) {
    record.verb = 'create';
    return handleTokenRequest(ctx, req, res, rr, tokens);
  }
  if (t.kind === 'Pod' && rr.group === '' && rr.subresource === 'log' && rr.name && rr.namespace) {
    if (method !== 'GET')
      throw new ApiError(
        405,
        'MethodNotAllowed',
        'the server does not allow this method on the requested resource',
      );
    record.verb = 'get';
    return handlePodLog(ctx, req, res, rr, url.searchParams);
  }
  if (!verb)
    throw new ApiError(
      405,
      'MethodNotAllowed',
      `the server does not allow this method on the requested resource`,
    );
  if (!t.namespaced && rr.namespace) throw NOT_FOUND;
  await handleResource({ ctx, req, res, rr, t, query: url.searchParams, user: record.user }, verb);
}

/** Serves and retires CRD-defined resources as CRDs come and go. */
function watchCrds(ctx: ServerContext): () => void {
  const crdType = ctx.registry.find('apiextensions.k8s.io', 'v1', 'customresourcedefinitions');
  return ctx.store.subscribe((e: StoreEvent) => {
    if (!crdType || e.key !== 'apiextensions.k8s.io/customresourcedefinitions') return;
    const crd = e.object;
    const t = fromCrd(crd as KObject & { spec: Record<string, unknown> });
    for (const served of ctx.registry.all())
      if (served.crd === crd.metadata.name) ctx.registry.remove(served.group, served.plural);
    if (e.type === 'DELETED') return;
    const clash = ctx.registry.all().find((r) => r.group === t.group && r.plural === t.plural);
    if (clash) return; // a built-in resource keeps its name (a real server reports NamesAccepted=False)
    ctx.registry.add(t);
    if (crd.metadata.deletionTimestamp && crd.metadata.finalizers?.includes(CRD_CLEANUP_FINALIZER))
      setImmediate(() => cleanUpCrd(ctx, crd, t));
  });
}

function cleanUpCrd(ctx: ServerContext, crd: KObject, t: ReturnType<typeof fromCrd>): void {
  const crdType = ctx.registry.find('apiextensions.k8s.io', 'v1', 'customresourcedefinitions');
  if (!crdType) return;
  try {
    const current = ctx.store.get(crdType, '', crd.metadata.name ?? '');
    if (!current.metadata.finalizers?.includes(CRD_CLEANUP_FINALIZER)) return;
    ctx.store.removeAll(t);
    current.metadata.finalizers = current.metadata.finalizers.filter((f) => f !== CRD_CLEANUP_FINALIZER);
    ctx.store.update(crdType, '', current.metadata.name ?? '', current);
  } catch (err) {
    if (!(err instanceof ApiError && err.code === 404)) throw err;
  }
}

function kubeconfigYaml(url: string, token: string): string {
  return toYaml({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'cartero-test', cluster: { server: url, 'insecure-skip-tls-verify': true } }],
    users: [{ name: 'admin', user: { token } }],
    contexts: [
      { name: 'cartero-test', context: { cluster: 'cartero-test', user: 'admin', namespace: 'default' } },
    ],
    'current-context': 'cartero-test',
    preferences: {},
  });
}

/** Starts the server on 127.0.0.1 at a free port and writes a kubeconfig for it. */
export async function startApiServer(opts: ApiServerOptions = {}): Promise<ApiServer> {
  const registry = new Registry();
  const store = new Store(opts.eventLogSize);
  for (const t of registry.all()) store.register(t);
  const serviceT = registry.find('', 'v1', 'services')!;
  const serviceClusterIpRange = opts.serviceClusterIpRange ?? DEFAULT_SERVICE_RANGE;
  store.admit.push(
    builtinAdmission({
      serviceClusterIpRange,
      clusterIpsInUse: () =>
        store
          .list(serviceT)
          .items.map((svc) => String((svc.spec as { clusterIP?: string })?.clusterIP ?? '')),
    }),
  );
  store.admit.push(celAdmission(registry, store));
  const ctx: ServerContext = {
    store,
    registry,
    decoders: defaultDecoders(),
    patchers: defaultPatchers(),
    watches: new Set(),
    bookmarkIntervalMs: opts.bookmarkIntervalMs,
  };
  installPatchers(ctx.patchers);
  installProtobuf(ctx.decoders);
  ctx.fieldTracker = managedFieldsTracker;
  ctx.tableRenderer = (t, version, obj, query) => renderTable(t, version, obj, query, registry, store);
  ctx.validator = (t, version, obj, query) => {
    const mode = query.get('fieldValidation');
    const m: ValidationMode = mode === 'Strict' || mode === 'Ignore' ? mode : 'Warn';
    return validateCustomResourceBody(t, version, obj, m, registry, store);
  };
  for (const ns of ['default', 'kube-system', 'kube-public', 'kube-node-lease'])
    store.create(registry.find('', 'v1', 'namespaces')!, '', { metadata: { name: ns } });
  const stopCrds = watchCrds(ctx);

  const token = randomBytes(24).toString('hex');
  const tokens = new Map<string, string>([[token, 'admin'], ...Object.entries(opts.tokens ?? {})]);
  const saTokens = serviceAccountTokens(store, registry);
  const requests: RequestRecord[] = [];
  let address = '';

  const server = http.createServer((req, res) => {
    const record: RequestRecord = {
      method: req.method ?? '',
      path: req.url ?? '',
      verb: '',
      group: '',
      version: '',
      resource: '',
      subresource: '',
      namespace: '',
      name: '',
      user: '',
      code: 0,
    };
    requests.push(record);
    res.on('finish', () => (record.code = res.statusCode));
    Promise.resolve()
      .then(() => {
        record.user = userOf(req, tokens, opts.anonymousUser ?? 'admin', (t) => saTokens.user(t));
        return route(ctx, req, res, record, address, saTokens);
      })
      .catch((err: unknown) => sendError(res, err));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  address = `127.0.0.1:${port}`;
  const url = `http://${address}`;

  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? (await makeTmpDir('cartero-apiserver-'));
  await mkdir(dir, { recursive: true });
  const kubeconfig = path.join(dir, 'kubeconfig');
  await writeFile(kubeconfig, kubeconfigYaml(url, token), { mode: 0o600 });

  return {
    url,
    port,
    kubeconfig,
    token,
    requests,
    store,
    registry,
    serviceClusterIpRange,
    serviceAccountToken: (namespace, name, tokenOpts) => saTokens.issue(namespace, name, tokenOpts).token,
    decoders: ctx.decoders,
    patchers: ctx.patchers,
    setTableRenderer: (r) => (ctx.tableRenderer = r),
    setPodLogSource: (source) => (ctx.podLogs = source),
    closeWatches(how = 'end') {
      const open = [...ctx.watches];
      for (const finish of open) finish(how === 'reset');
      return open.length;
    },
    async stop() {
      stopCrds();
      for (const finish of [...ctx.watches]) finish();
      store.stop();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      if (ownDir) await removeTmpDir(dir);
    },
  };
}
