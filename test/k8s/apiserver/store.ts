/**
 * In-memory object store with Kubernetes semantics: one global resourceVersion, uid, generation,
 * optimistic concurrency, finalizers and deletionTimestamp, owner-reference garbage collection,
 * namespace termination, and a bounded event log that watches replay from.
 */
import { randomUUID } from 'node:crypto';
import { alreadyExists, ApiError, badRequest, conflict, expired, notFound, STALE_OBJECT } from './errors.js';
import { deepEqual, nowTimestamp, specPart, type KObject } from './objects.js';
import { apiVersionOf, resourceKey, type ResourceType } from './resources.js';
import type { FieldSelector, LabelSelector } from './selectors.js';

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoreEvent {
  type: EventType;
  rv: number;
  /** resourceKey(group, plural) of the object's resource. */
  key: string;
  namespace: string;
  object: KObject;
  /** The object before a MODIFIED event (for selector transitions). */
  prev?: KObject;
}

export type Operation = 'CREATE' | 'UPDATE';

/**
 * Admission: called before every create and update with the object about to be stored (mutable);
 * may default, prune or throw an ApiError (422 Invalid). `old` is set for updates.
 */
export type AdmitFn = (t: ResourceType, obj: KObject, old: KObject | undefined, op: Operation) => void;

export interface ListOptions {
  namespace?: string;
  labelSelector?: LabelSelector;
  fieldSelector?: FieldSelector;
  limit?: number;
  continue?: string;
}

export interface ListResult {
  items: KObject[];
  resourceVersion: string;
  continue?: string;
  remainingItemCount?: number;
}

export type PropagationPolicy = 'Background' | 'Foreground' | 'Orphan';

export interface DeleteOptions {
  propagationPolicy?: PropagationPolicy;
  preconditions?: { uid?: string; resourceVersion?: string };
  dryRun?: boolean;
}

export interface WriteOptions {
  subresource?: 'status';
  dryRun?: boolean;
}

interface Located {
  t: ResourceType;
  namespace: string;
  name: string;
}

const FOREGROUND = 'foregroundDeletion';
const NS_FINALIZER = 'kubernetes';

function objKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

function randomSuffix(): string {
  const alphabet = 'bcdfghjklmnpqrstvwxz2456789';
  let s = '';
  for (let i = 0; i < 5; i++) s += alphabet[Math.floor(Math.random() * alphabet.length)];
  return s;
}

function encodeContinue(start: string): string {
  return Buffer.from(JSON.stringify({ start })).toString('base64url');
}

function decodeContinue(token: string): string {
  try {
    const v = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as { start?: unknown };
    if (typeof v.start === 'string') return v.start;
  } catch {
    // fall through
  }
  throw badRequest('continue key is not valid');
}

export class Store {
  private rv = 0;
  private readonly objects = new Map<string, Map<string, KObject>>();
  private readonly types = new Map<string, ResourceType>();
  private readonly byUid = new Map<string, Located>();
  /** owner uid -> uids of objects whose ownerReferences name it. */
  private readonly dependents = new Map<string, Set<string>>();
  private readonly log: StoreEvent[] = [];
  private droppedUpTo = 0;
  private readonly listeners = new Set<(e: StoreEvent) => void>();
  private readonly gcCandidates = new Set<string>();
  /** uids of owners being deleted in the foreground. */
  private readonly foregroundOwners = new Set<string>();
  private controllersScheduled = false;
  private stopped = false;
  readonly admit: AdmitFn[] = [];

  constructor(private readonly logSize = 10_000) {}

  get resourceVersion(): string {
    return String(this.rv);
  }

  /** The oldest resourceVersion a watch can still start from. */
  get oldestWatchable(): number {
    return this.droppedUpTo;
  }

  /**
   * Test hook: forgets the event log, as etcd compaction does, so a watch from any resourceVersion
   * older than the current one is answered 410 Expired (clients must relist).
   */
  compact(): void {
    this.log.length = 0;
    this.droppedUpTo = this.rv;
  }

  stop(): void {
    this.stopped = true;
    this.listeners.clear();
  }

  subscribe(fn: (e: StoreEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Events after `rv` (all resources); throws 410 Expired when the log no longer reaches back that far. */
  eventsSince(rv: number): StoreEvent[] {
    if (rv < this.droppedUpTo) throw expired(`too old resource version: ${rv} (${this.droppedUpTo + 1})`);
    return this.log.filter((e) => e.rv > rv);
  }

  private bucket(t: ResourceType): Map<string, KObject> {
    const key = resourceKey(t.group, t.plural);
    this.types.set(key, t);
    let b = this.objects.get(key);
    if (!b) this.objects.set(key, (b = new Map()));
    return b;
  }

  private find(t: ResourceType, namespace: string, name: string): KObject | undefined {
    return this.bucket(t).get(objKey(t.namespaced ? namespace : '', name));
  }

  get(t: ResourceType, namespace: string, name: string): KObject {
    const obj = this.find(t, namespace, name);
    if (!obj) throw notFound(t, name);
    return structuredClone(obj);
  }

  list(t: ResourceType, opts: ListOptions = {}): ListResult {
    const start = opts.continue ? decodeContinue(opts.continue) : undefined;
    const entries = [...this.bucket(t).entries()]
      .filter(([k]) => start === undefined || k > start)
      .filter(([, o]) => !t.namespaced || !opts.namespace || o.metadata.namespace === opts.namespace)
      .filter(([, o]) => !opts.labelSelector || opts.labelSelector.matches(o.metadata.labels))
      .filter(([, o]) => !opts.fieldSelector || opts.fieldSelector.matches(o))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const result: ListResult = { items: [], resourceVersion: this.resourceVersion };
    const limit = opts.limit && opts.limit > 0 ? opts.limit : entries.length;
    const page = entries.slice(0, limit);
    result.items = page.map(([, o]) => structuredClone(o));
    if (entries.length > page.length) {
      result.continue = encodeContinue(page[page.length - 1][0]);
      result.remainingItemCount = entries.length - page.length;
    }
    return result;
  }

  private runAdmission(t: ResourceType, obj: KObject, old: KObject | undefined, op: Operation): void {
    for (const fn of this.admit) fn(t, obj, old, op);
  }

  private checkNamespace(t: ResourceType, namespace: string): void {
    if (!t.namespaced) return;
    if (!namespace)
      throw badRequest('the server could not find the requested resource (namespace is required)');
    const ns = this.bucket(this.namespaceType()).get(objKey('', namespace));
    if (!ns) throw notFound({ group: '', plural: 'namespaces' }, namespace);
    if (ns.metadata.deletionTimestamp)
      throw new ApiError(
        403,
        'Forbidden',
        `${t.plural} is forbidden: unable to create new content in namespace ${namespace} because it is being terminated`,
      );
  }

  private namespaceType(): ResourceType {
    const t = this.types.get(resourceKey('', 'namespaces'));
    if (!t) throw new Error('namespaces resource not registered with the store');
    return t;
  }

  /** Registers a resource type up front (the store learns types lazily otherwise). */
  register(t: ResourceType): void {
    this.bucket(t);
  }

  create(t: ResourceType, namespace: string, input: KObject, opts: WriteOptions = {}): KObject {
    const obj = structuredClone(input);
    const meta = (obj.metadata ??= {});
    if (!meta.name && meta.generateName) meta.name = `${meta.generateName}${randomSuffix()}`;
    const name = meta.name ?? '';
    if (t.namespaced) meta.namespace = namespace;
    else delete meta.namespace;
    if (t.statusSubresource && t.kind !== 'Namespace') delete obj.status;
    this.runAdmission(t, obj, undefined, 'CREATE');
    if (this.find(t, namespace, name)) throw alreadyExists(t, name);
    this.checkNamespace(t, namespace);
    obj.apiVersion = apiVersionOf(t.group, t.storageVersion);
    obj.kind = t.kind;
    meta.uid = randomUUID();
    meta.creationTimestamp = nowTimestamp();
    meta.generation = 1;
    delete meta.deletionTimestamp;
    delete meta.deletionGracePeriodSeconds;
    if (opts.dryRun) return obj;
    meta.resourceVersion = String(++this.rv);
    this.put(t, obj);
    this.emit('ADDED', t, obj);
    if (meta.ownerReferences?.length) this.gcCandidates.add(meta.uid);
    this.scheduleControllers();
    return structuredClone(obj);
  }

  update(t: ResourceType, namespace: string, name: string, input: KObject, opts: WriteOptions = {}): KObject {
    const old = this.find(t, namespace, name);
    if (!old) throw notFound(t, name);
    const given = input.metadata ?? {};
    if (given.resourceVersion && given.resourceVersion !== old.metadata.resourceVersion)
      throw conflict(t, name, STALE_OBJECT);
    if (given.uid && given.uid !== old.metadata.uid)
      throw conflict(
        t,
        name,
        `Precondition failed: UID in precondition: ${given.uid}, UID in object meta: ${old.metadata.uid}`,
      );
    const obj =
      opts.subresource === 'status' ? this.statusUpdate(old, input) : this.mainUpdate(t, old, input);
    this.runAdmission(t, obj, structuredClone(old), 'UPDATE');
    if (opts.subresource !== 'status' && !deepEqual(specPart(obj), specPart(old)))
      obj.metadata.generation = (old.metadata.generation ?? 0) + 1;
    if (deepEqual(obj, old) || opts.dryRun) return structuredClone(obj);
    obj.metadata.resourceVersion = String(++this.rv);
    this.put(t, obj, old);
    this.emit('MODIFIED', t, obj, old);
    if (obj.metadata.deletionTimestamp) this.maybeFinalize(t, obj);
    if (obj.metadata.ownerReferences?.length) this.gcCandidates.add(obj.metadata.uid ?? '');
    this.scheduleControllers();
    return structuredClone(this.find(t, namespace, name) ?? obj);
  }

  /** The new object for a write to the main endpoint: system metadata kept, status kept if it has a subresource. */
  private mainUpdate(t: ResourceType, old: KObject, input: KObject): KObject {
    const obj = structuredClone(input);
    const meta = (obj.metadata ??= {});
    for (const k of [
      'name',
      'namespace',
      'uid',
      'creationTimestamp',
      'deletionTimestamp',
      'deletionGracePeriodSeconds',
      'generation',
      'resourceVersion',
    ])
      if (old.metadata[k] === undefined) delete meta[k];
      else meta[k] = old.metadata[k];
    obj.apiVersion = old.apiVersion;
    obj.kind = old.kind;
    if (t.statusSubresource) {
      if (old.status === undefined) delete obj.status;
      else obj.status = structuredClone(old.status);
    }
    if (old.metadata.deletionTimestamp) {
      const before = new Set(old.metadata.finalizers ?? []);
      const added = (meta.finalizers ?? []).filter((f) => !before.has(f));
      if (added.length)
        throw new ApiError(
          422,
          'Invalid',
          `${t.kind} "${old.metadata.name}" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers ${JSON.stringify(added)}`,
        );
    }
    return obj;
  }

  /** The new object for a write to /status: the old one with the new status (and the managedFields tracking it). */
  private statusUpdate(old: KObject, input: KObject): KObject {
    const obj = structuredClone(old);
    if (input.status === undefined) delete obj.status;
    else obj.status = structuredClone(input.status);
    const managedFields = input.metadata?.managedFields;
    if (managedFields !== undefined) obj.metadata.managedFields = structuredClone(managedFields);
    return obj;
  }

  delete(t: ResourceType, namespace: string, name: string, opts: DeleteOptions = {}): KObject {
    const current = this.find(t, namespace, name);
    if (!current) throw notFound(t, name);
    const pre = opts.preconditions ?? {};
    if (pre.uid && pre.uid !== current.metadata.uid)
      throw conflict(
        t,
        name,
        `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${current.metadata.uid}`,
      );
    if (pre.resourceVersion && pre.resourceVersion !== current.metadata.resourceVersion)
      throw conflict(
        t,
        name,
        `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${current.metadata.resourceVersion}`,
      );
    if (opts.dryRun) return structuredClone(current);
    const policy = opts.propagationPolicy ?? 'Background';
    if (policy === 'Orphan') this.orphanDependents(current);
    const obj = structuredClone(current);
    const finalizers = obj.metadata.finalizers ?? [];
    if (policy === 'Foreground' && !finalizers.includes(FOREGROUND) && this.liveDependents(obj).length)
      obj.metadata.finalizers = [...finalizers, FOREGROUND];
    if (obj.metadata.finalizers?.includes(FOREGROUND)) this.foregroundOwners.add(obj.metadata.uid ?? '');
    const isNamespace = t.kind === 'Namespace' && t.group === '';
    if (!obj.metadata.finalizers?.length && !isNamespace) {
      this.remove(t, obj);
      return obj;
    }
    if (obj.metadata.deletionTimestamp && deepEqual(obj, current)) return obj;
    if (!obj.metadata.deletionTimestamp) {
      obj.metadata.deletionTimestamp = nowTimestamp();
      obj.metadata.deletionGracePeriodSeconds = 0;
      obj.metadata.generation = (obj.metadata.generation ?? 0) + 1;
    }
    if (isNamespace) obj.status = { ...((obj.status as object) ?? {}), phase: 'Terminating' };
    obj.metadata.resourceVersion = String(++this.rv);
    this.put(t, obj, current);
    this.emit('MODIFIED', t, obj, current);
    this.scheduleControllers();
    return structuredClone(obj);
  }

  /** Removes every object of a resource (when its CRD goes away). */
  removeAll(t: ResourceType): void {
    for (const obj of [...this.bucket(t).values()]) this.remove(t, structuredClone(obj));
    this.objects.delete(resourceKey(t.group, t.plural));
  }

  private remove(t: ResourceType, obj: KObject): void {
    const meta = obj.metadata;
    this.bucket(t).delete(objKey(meta.namespace ?? '', meta.name ?? ''));
    const uid = meta.uid ?? '';
    this.byUid.delete(uid);
    this.unindexOwners(obj);
    meta.resourceVersion = String(++this.rv);
    this.emit('DELETED', t, obj);
    for (const dep of this.dependents.get(uid) ?? []) this.gcCandidates.add(dep);
    this.scheduleControllers();
  }

  private put(t: ResourceType, obj: KObject, old?: KObject): void {
    const meta = obj.metadata;
    this.bucket(t).set(objKey(meta.namespace ?? '', meta.name ?? ''), obj);
    this.byUid.set(meta.uid ?? '', { t, namespace: meta.namespace ?? '', name: meta.name ?? '' });
    if (old) this.unindexOwners(old);
    for (const ref of meta.ownerReferences ?? []) {
      const set = this.dependents.get(ref.uid) ?? new Set<string>();
      set.add(meta.uid ?? '');
      this.dependents.set(ref.uid, set);
    }
  }

  private unindexOwners(obj: KObject): void {
    for (const ref of obj.metadata.ownerReferences ?? []) {
      const set = this.dependents.get(ref.uid);
      set?.delete(obj.metadata.uid ?? '');
      if (set?.size === 0) this.dependents.delete(ref.uid);
    }
  }

  private emit(type: EventType, t: ResourceType, obj: KObject, prev?: KObject): void {
    const event: StoreEvent = {
      type,
      rv: Number(obj.metadata.resourceVersion),
      key: resourceKey(t.group, t.plural),
      namespace: obj.metadata.namespace ?? '',
      object: structuredClone(obj),
    };
    if (prev) event.prev = structuredClone(prev);
    this.log.push(event);
    while (this.log.length > this.logSize) this.droppedUpTo = this.log.shift()?.rv ?? this.droppedUpTo;
    for (const fn of [...this.listeners]) fn(event);
  }

  private lookup(uid: string): { loc: Located; obj: KObject } | undefined {
    const loc = this.byUid.get(uid);
    const obj = loc && this.find(loc.t, loc.namespace, loc.name);
    return loc && obj ? { loc, obj } : undefined;
  }

  private liveDependents(owner: KObject): string[] {
    return [...(this.dependents.get(owner.metadata.uid ?? '') ?? [])].filter((uid) => this.byUid.has(uid));
  }

  private orphanDependents(owner: KObject): void {
    const uid = owner.metadata.uid ?? '';
    for (const dep of this.liveDependents(owner)) {
      const found = this.lookup(dep);
      if (!found) continue;
      const obj = structuredClone(found.obj);
      obj.metadata.ownerReferences = (obj.metadata.ownerReferences ?? []).filter((r) => r.uid !== uid);
      if (!obj.metadata.ownerReferences.length) delete obj.metadata.ownerReferences;
      this.update(found.loc.t, found.loc.namespace, found.loc.name, obj);
    }
  }

  /** Removes an object being deleted once nothing holds it any more. */
  private maybeFinalize(t: ResourceType, obj: KObject): void {
    if (obj.metadata.finalizers?.length) return;
    if (t.kind === 'Namespace' && t.group === '') {
      const spec = obj.spec as { finalizers?: string[] } | undefined;
      if (spec?.finalizers?.length) return;
    }
    const current = this.find(t, obj.metadata.namespace ?? '', obj.metadata.name ?? '');
    if (current) this.remove(t, structuredClone(current));
  }

  private scheduleControllers(): void {
    if (this.controllersScheduled || this.stopped) return;
    this.controllersScheduled = true;
    setImmediate(() => {
      this.controllersScheduled = false;
      if (this.stopped) return;
      this.collectGarbage();
      this.finishForeground();
      this.terminateNamespaces();
    });
  }

  /** Background GC: deletes objects all of whose owners are gone. */
  private collectGarbage(): void {
    const candidates = [...this.gcCandidates];
    this.gcCandidates.clear();
    for (const uid of candidates) {
      const found = this.lookup(uid);
      const refs = found?.obj.metadata.ownerReferences ?? [];
      if (!found || !refs.length || found.obj.metadata.deletionTimestamp) continue;
      if (refs.some((r) => this.byUid.has(r.uid))) continue;
      this.tryDelete(found.loc, { propagationPolicy: 'Background' });
    }
  }

  /** Foreground deletion: deletes an owner's dependents, then lets the owner go. */
  private finishForeground(): void {
    for (const uid of [...this.foregroundOwners]) {
      const found = this.lookup(uid);
      const obj = found?.obj;
      if (!found || !obj?.metadata.deletionTimestamp || !obj.metadata.finalizers?.includes(FOREGROUND)) {
        this.foregroundOwners.delete(uid);
        continue;
      }
      for (const dep of this.liveDependents(obj)) {
        const d = this.lookup(dep);
        if (d && !d.obj.metadata.deletionTimestamp)
          this.tryDelete(d.loc, { propagationPolicy: 'Foreground' });
      }
      if (this.liveDependents(obj).length) continue;
      const next = structuredClone(obj);
      next.metadata.finalizers = (next.metadata.finalizers ?? []).filter((f) => f !== FOREGROUND);
      this.foregroundOwners.delete(uid);
      this.update(found.loc.t, found.loc.namespace, found.loc.name, next);
    }
  }

  /** The namespace controller: deletes a terminating namespace's content, then the namespace. */
  private terminateNamespaces(): void {
    const nsType = this.types.get(resourceKey('', 'namespaces'));
    if (!nsType) return;
    for (const ns of [...this.bucket(nsType).values()]) {
      if (!ns.metadata.deletionTimestamp) continue;
      const name = ns.metadata.name ?? '';
      let remaining = 0;
      for (const [key, bucket] of this.objects) {
        const t = this.types.get(key);
        if (!t?.namespaced) continue;
        for (const obj of [...bucket.values()]) {
          if (obj.metadata.namespace !== name) continue;
          remaining++;
          if (!obj.metadata.deletionTimestamp)
            this.tryDelete(
              { t, namespace: name, name: obj.metadata.name ?? '' },
              { propagationPolicy: 'Background' },
            );
        }
      }
      if (remaining > 0) continue;
      const spec = ns.spec as { finalizers?: string[] } | undefined;
      if (spec?.finalizers?.includes(NS_FINALIZER)) {
        const next = structuredClone(ns);
        (next.spec as { finalizers: string[] }).finalizers = spec.finalizers.filter(
          (f) => f !== NS_FINALIZER,
        );
        this.update(nsType, '', name, next);
      } else this.maybeFinalize(nsType, ns);
    }
  }

  private tryDelete(loc: Located, opts: DeleteOptions): void {
    try {
      this.delete(loc.t, loc.namespace, loc.name, opts);
    } catch (err) {
      if (!(err instanceof ApiError && err.code === 404)) throw err;
    }
  }
}
