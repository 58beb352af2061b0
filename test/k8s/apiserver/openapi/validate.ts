// Custom resource validation with structural schema semantics (defaulting, pruning, unknown fields
// under fieldValidation), the CEL rules a schema carries (listed; cel.ts runs them), and the Status
// bodies a refused custom resource gets. Pure: no I/O. (Just over 500 lines: the structural-schema
// walk is one recursive algorithm, kept in one place.)
import { failureStatus } from '../errors.js';
import { clone, deepEqual, isObject } from '../objects.js';
import { open } from '../kinds/schema.js';
import type { ServedKind } from '../openapi.js';

type Json = Record<string, unknown>;

export interface FieldError {
  /** Path like `spec.listeners[0].port`. */
  field: string;
  /** The cause message without the field, e.g. `Invalid value: -1: spec.replicas in body should be ...`. */
  message: string;
  /** Status cause reason: FieldValueInvalid, FieldValueRequired, FieldValueNotSupported, FieldValueTypeInvalid,
   * FieldValueTooLong, FieldValueTooMany, FieldValueDuplicate, FieldValueForbidden; `FieldValueUnknown` for
   * an unknown field in Strict mode (which the real server answers with 400, see customResourceAdmission). */
  type: string;
}

export interface ValidationResult {
  object: Record<string, unknown>;
  errors: FieldError[];
  warnings: string[];
}

interface Ctx {
  mode: 'Strict' | 'Warn' | 'Ignore';
  errors: FieldError[];
  unknown: string[];
  /** Validation only (allOf/anyOf/oneOf/not branches): no pruning, no unknown-field reports. */
  validateOnly: boolean;
}

function jsonType(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

/** How the API server renders a value in `Invalid value: ...`. */
export function formatValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  return JSON.stringify(v);
}

const invalid = (field: string, value: unknown, detail: string): FieldError => ({
  field,
  type: 'FieldValueInvalid',
  message: `Invalid value: ${formatValue(value)}: ${detail}`,
});

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;
const FORMATS: Record<string, (s: string) => boolean> = {
  'date-time': (s) => RFC3339.test(s) && !Number.isNaN(Date.parse(s.replace(' ', 'T'))),
  datetime: (s) => FORMATS['date-time'](s),
  date: (s) => /^\d{4}-\d{2}-\d{2}$/.test(s) && !Number.isNaN(Date.parse(s)),
  byte: (s) => /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(s),
  uuid: (s) => /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i.test(s),
  hostname: (s) =>
    s.length <= 255 &&
    /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/.test(
      s,
    ),
  ipv4: (s) => /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/.test(s),
  ipv6: (s) => /^[0-9a-fA-F:.]+$/.test(s) && s.includes(':'),
  cidr: (s) => /^[0-9a-fA-F:.]+\/\d{1,3}$/.test(s),
  email: (s) => /^[^@\s]+@[^@\s]+$/.test(s),
  uri: (s) => /^[A-Za-z][A-Za-z0-9+.-]*:/.test(s),
  duration: (s) => /^-?(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/.test(s) || s === '0',
};

function checkSchema(schema: Json, value: unknown, path: string, ctx: Ctx, root: boolean): unknown {
  const display = path || '<root>';
  if (value === null) {
    if (schema.nullable === true) return value;
    if (schema.type !== undefined) {
      ctx.errors.push({
        field: display,
        type: 'FieldValueTypeInvalid',
        message: `Invalid value: "null": ${display} in body must be of type ${String(schema.type)}: "null"`,
      });
    }
    return value;
  }
  const actual = jsonType(value);
  if (schema['x-kubernetes-int-or-string'] === true) {
    if (actual !== 'integer' && actual !== 'string') {
      ctx.errors.push({
        field: display,
        type: 'FieldValueTypeInvalid',
        message: `Invalid value: "${actual}": ${display} in body must be of type integer,string: "${actual}"`,
      });
      return value;
    }
  } else if (typeof schema.type === 'string') {
    const want = schema.type;
    const ok = want === actual || (want === 'number' && actual === 'integer');
    if (!ok) {
      ctx.errors.push({
        field: display,
        type: 'FieldValueTypeInvalid',
        message: `Invalid value: "${actual}": ${display} in body must be of type ${want}: "${actual}"`,
      });
      return value;
    }
  }

  if (isObject(value)) value = checkObject(schema, value, path, ctx, root);
  else if (Array.isArray(value)) checkArray(schema, value, path, ctx);
  else if (typeof value === 'string') checkString(schema, value, display, ctx);
  else if (typeof value === 'number') checkNumber(schema, value, display, ctx);

  if (Array.isArray(schema.enum) && !schema.enum.some((e) => deepEqual(e, value))) {
    ctx.errors.push({
      field: display,
      type: 'FieldValueNotSupported',
      message: `Unsupported value: ${formatValue(value)}: supported values: ${schema.enum.map(formatValue).join(', ')}`,
    });
  }
  checkJunctors(schema, value, display, ctx);
  return value;
}

function subValidate(schema: unknown, value: unknown, path: string, ctx: Ctx): FieldError[] {
  if (!isObject(schema)) return [];
  const sub: Ctx = { mode: ctx.mode, errors: [], unknown: [], validateOnly: true };
  checkSchema(schema, clone(value), path, sub, false);
  return sub.errors;
}

function checkJunctors(schema: Json, value: unknown, display: string, ctx: Ctx): void {
  const path = display === '<root>' ? '' : display;
  if (Array.isArray(schema.allOf)) {
    for (const s of schema.allOf) ctx.errors.push(...subValidate(s, value, path, ctx));
  }
  if (Array.isArray(schema.anyOf)) {
    const results = schema.anyOf.map((s) => subValidate(s, value, path, ctx));
    if (results.length > 0 && results.every((r) => r.length > 0)) {
      ctx.errors.push(...results[0]);
      ctx.errors.push(
        invalid(display, value, `${display} in body must validate at least one schema (anyOf)`),
      );
    }
  }
  if (Array.isArray(schema.oneOf)) {
    const passing = schema.oneOf.filter((s) => subValidate(s, value, path, ctx).length === 0).length;
    if (passing !== 1) {
      ctx.errors.push(
        invalid(display, value, `${display} in body must validate one and only one schema (oneOf)`),
      );
    }
  }
  if (isObject(schema.not) && subValidate(schema.not, value, path, ctx).length === 0) {
    ctx.errors.push(invalid(display, value, `${display} in body must not validate the schema (not)`));
  }
}

const OBJECT_META_FIELDS = new Set([
  'name',
  'generateName',
  'namespace',
  'selfLink',
  'uid',
  'resourceVersion',
  'generation',
  'creationTimestamp',
  'deletionTimestamp',
  'deletionGracePeriodSeconds',
  'labels',
  'annotations',
  'ownerReferences',
  'finalizers',
  'managedFields',
]);

function child(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}

function checkObject(schema: Json, obj: Json, path: string, ctx: Ctx, root: boolean): Json {
  const display = path || '<root>';
  const props = isObject(schema.properties) ? schema.properties : {};
  const additional = schema.additionalProperties;
  const preserve = schema['x-kubernetes-preserve-unknown-fields'] === true;
  const embedded = schema['x-kubernetes-embedded-resource'] === true;

  // nulls of non-nullable fields are dropped (or defaulted), then defaults for absent fields
  for (const [key, ps] of Object.entries(props)) {
    if (!isObject(ps)) continue;
    if (obj[key] === null && ps.nullable !== true && !ctx.validateOnly) {
      if (ps.default !== undefined) obj[key] = clone(ps.default);
      else delete obj[key];
    }
    if (obj[key] === undefined && ps.default !== undefined && !ctx.validateOnly) obj[key] = clone(ps.default);
  }

  for (const key of Object.keys(obj)) {
    const p = child(path, key);
    if ((root || embedded) && (key === 'apiVersion' || key === 'kind')) continue;
    if ((root || embedded) && key === 'metadata') {
      if (root && isObject(obj.metadata)) {
        for (const mk of Object.keys(obj.metadata)) {
          if (!OBJECT_META_FIELDS.has(mk)) unknownField(obj.metadata, mk, `metadata.${mk}`, ctx);
        }
      }
      continue;
    }
    const ps = props[key];
    if (isObject(ps)) {
      obj[key] = checkSchema(ps, obj[key], p, ctx, false);
    } else if (isObject(additional)) {
      obj[key] = checkSchema(additional, obj[key], p, ctx, false);
    } else if (additional === true || preserve) {
      continue;
    } else {
      unknownField(obj, key, p, ctx);
    }
  }

  if (Array.isArray(schema.required)) {
    for (const r of schema.required) {
      if (typeof r === 'string' && obj[r] === undefined) {
        ctx.errors.push({ field: child(path, r), type: 'FieldValueRequired', message: 'Required value' });
      }
    }
  }
  const n = Object.keys(obj).length;
  if (typeof schema.minProperties === 'number' && n < schema.minProperties) {
    ctx.errors.push(
      invalid(display, n, `${display} in body should have at least ${schema.minProperties} properties`),
    );
  }
  if (typeof schema.maxProperties === 'number' && n > schema.maxProperties) {
    ctx.errors.push({
      field: display,
      type: 'FieldValueTooMany',
      message: `Too many: ${n}: must have at most ${schema.maxProperties} items`,
    });
  }
  return obj;
}

function unknownField(obj: Json, key: string, path: string, ctx: Ctx): void {
  if (ctx.validateOnly) return;
  ctx.unknown.push(path);
  delete obj[key];
}

function checkArray(schema: Json, arr: unknown[], path: string, ctx: Ctx): void {
  const display = path || '<root>';
  if (isObject(schema.items)) {
    for (let i = 0; i < arr.length; i++)
      arr[i] = checkSchema(schema.items, arr[i], `${path}[${i}]`, ctx, false);
  }
  if (typeof schema.minItems === 'number' && arr.length < schema.minItems) {
    ctx.errors.push(
      invalid(display, arr, `${display} in body should have at least ${schema.minItems} items`),
    );
  }
  if (typeof schema.maxItems === 'number' && arr.length > schema.maxItems) {
    ctx.errors.push({
      field: display,
      type: 'FieldValueTooMany',
      message: `Too many: ${arr.length}: must have at most ${schema.maxItems} items`,
    });
  }
  const listType = schema['x-kubernetes-list-type'];
  const keys = schema['x-kubernetes-list-map-keys'];
  if (listType === 'set' || schema.uniqueItems === true) {
    for (let i = 0; i < arr.length; i++) {
      if (arr.slice(0, i).some((x) => deepEqual(x, arr[i]))) {
        ctx.errors.push({
          field: `${path}[${i}]`,
          type: 'FieldValueDuplicate',
          message: `Duplicate value: ${formatValue(arr[i])}`,
        });
      }
    }
  } else if (listType === 'map' && Array.isArray(keys)) {
    const seen: Json[] = [];
    arr.forEach((item, i) => {
      if (!isObject(item)) return;
      const k: Json = {};
      for (const key of keys) if (typeof key === 'string') k[key] = item[key];
      if (seen.some((s) => deepEqual(s, k))) {
        ctx.errors.push({
          field: `${path}[${i}]`,
          type: 'FieldValueDuplicate',
          message: `Duplicate value: ${formatValue(k)}`,
        });
      }
      seen.push(k);
    });
  }
}

function checkString(schema: Json, s: string, display: string, ctx: Ctx): void {
  const len = [...s].length;
  if (typeof schema.minLength === 'number' && len < schema.minLength) {
    ctx.errors.push(
      invalid(display, s, `${display} in body should be at least ${schema.minLength} chars long`),
    );
  }
  if (typeof schema.maxLength === 'number' && len > schema.maxLength) {
    ctx.errors.push({
      field: display,
      type: 'FieldValueTooLong',
      message: `Too long: may not be more than ${schema.maxLength} bytes`,
    });
  }
  if (typeof schema.pattern === 'string') {
    let re: RegExp | undefined;
    try {
      re = new RegExp(schema.pattern, 'u');
    } catch {
      re = undefined; // the CRD should have been refused; nothing to check against
    }
    if (re && !re.test(s)) {
      ctx.errors.push(invalid(display, s, `${display} in body should match '${schema.pattern}'`));
    }
  }
  if (typeof schema.format === 'string' && schema['x-kubernetes-int-or-string'] !== true) {
    const check = FORMATS[schema.format];
    if (check && !check(s)) {
      ctx.errors.push(
        invalid(display, s, `${display} in body must be of type ${schema.format}: ${formatValue(s)}`),
      );
    }
  }
}

function checkNumber(schema: Json, n: number, display: string, ctx: Ctx): void {
  if (typeof schema.minimum === 'number') {
    if (schema.exclusiveMinimum === true ? n <= schema.minimum : n < schema.minimum) {
      const rel = schema.exclusiveMinimum === true ? 'greater than' : 'greater than or equal to';
      ctx.errors.push(invalid(display, n, `${display} in body should be ${rel} ${schema.minimum}`));
    }
  }
  if (typeof schema.maximum === 'number') {
    if (schema.exclusiveMaximum === true ? n >= schema.maximum : n > schema.maximum) {
      const rel = schema.exclusiveMaximum === true ? 'less than' : 'less than or equal to';
      ctx.errors.push(invalid(display, n, `${display} in body should be ${rel} ${schema.maximum}`));
    }
  }
  if (typeof schema.multipleOf === 'number' && schema.multipleOf > 0) {
    const q = n / schema.multipleOf;
    if (Math.abs(q - Math.round(q)) > 1e-9) {
      ctx.errors.push(invalid(display, n, `${display} in body should be a multiple of ${schema.multipleOf}`));
    }
  }
  if (schema.format === 'int32' && (n < -2147483648 || n > 2147483647)) {
    ctx.errors.push(invalid(display, n, `${display} in body must be of type int32: ${formatValue(n)}`));
  }
  if (schema.format === 'int64' && !Number.isSafeInteger(n)) {
    ctx.errors.push(invalid(display, n, `${display} in body must be of type int64: ${formatValue(n)}`));
  }
}

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/**
 * Default, prune and validate a custom resource against its CRD version's openAPIV3Schema.
 * The input is not modified. `errors` holds schema violations and (Strict only) unknown fields as
 * `FieldValueUnknown`; `warnings` holds `unknown field "spec.foo"` in Warn mode. CEL rules
 * (x-kubernetes-validations) are not evaluated here: cel.ts does that in an admission step, where the
 * stored object (oldSelf) is known.
 */
export function validateCustomResource(
  schema: Record<string, unknown>,
  obj: Record<string, unknown>,
  mode: 'Strict' | 'Warn' | 'Ignore',
  opts: { namespaced?: boolean } = {},
): ValidationResult {
  const ctx: Ctx = { mode, errors: [], unknown: [], validateOnly: false };
  const object = clone(obj);
  const meta = isObject(object.metadata) ? object.metadata : undefined;
  const metaErrors: FieldError[] = [];
  if (!meta || (!meta.name && !meta.generateName)) {
    metaErrors.push({
      field: 'metadata.name',
      type: 'FieldValueRequired',
      message: 'Required value: name or generateName is required',
    });
  } else if (
    typeof meta.name === 'string' &&
    meta.name !== '' &&
    !(meta.name.length <= 253 && DNS1123_SUBDOMAIN.test(meta.name))
  ) {
    metaErrors.push(
      invalid(
        'metadata.name',
        meta.name,
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
      ),
    );
  }
  if (opts.namespaced === true && !(meta && meta.namespace)) {
    metaErrors.push({ field: 'metadata.namespace', type: 'FieldValueRequired', message: 'Required value' });
  } else if (opts.namespaced === false && meta && meta.namespace) {
    metaErrors.push({
      field: 'metadata.namespace',
      type: 'FieldValueForbidden',
      message: 'Forbidden: not allowed on this type',
    });
  }
  const result = checkSchema(schema, object, '', ctx, true) as Json;
  const errors = [...metaErrors, ...ctx.errors];
  const warnings: string[] = [];
  for (const u of ctx.unknown) {
    const msg = `unknown field "${u}"`;
    if (mode === 'Strict') errors.push({ field: u, type: 'FieldValueUnknown', message: msg });
    else if (mode === 'Warn') warnings.push(msg);
  }
  return { object: result, errors, warnings };
}

export interface CelRule {
  /** Where the rule sits: `` for the root, `spec`, `spec.listeners[*]`. */
  path: string;
  rule: string;
  message?: string;
  messageExpression?: string;
  reason?: string;
  fieldPath?: string;
}

/** The x-kubernetes-validations (CEL) rules of a schema, listed (cel.ts compiles and evaluates them). */
export function celRulesOf(schema: Record<string, unknown>): CelRule[] {
  const out: CelRule[] = [];
  const walk = (s: unknown, path: string): void => {
    if (!isObject(s)) return;
    const rules = s['x-kubernetes-validations'];
    if (Array.isArray(rules)) {
      for (const r of rules) {
        if (!isObject(r) || typeof r.rule !== 'string') continue;
        const rule: CelRule = { path, rule: r.rule };
        for (const k of ['message', 'messageExpression', 'reason', 'fieldPath'] as const) {
          if (typeof r[k] === 'string') rule[k] = r[k];
        }
        out.push(rule);
      }
    }
    if (isObject(s.properties)) for (const [k, v] of Object.entries(s.properties)) walk(v, child(path, k));
    if (isObject(s.items)) walk(s.items, `${path}[*]`);
    if (isObject(s.additionalProperties)) walk(s.additionalProperties, `${path}[*]`);
  };
  walk(schema, '');
  return out;
}

function splitKind(kind: string | ServedKind): { kind: string; group: string } {
  if (typeof kind !== 'string') return { kind: kind.kind, group: kind.group };
  const dot = kind.indexOf('.');
  return dot < 0 ? { kind, group: '' } : { kind: kind.slice(0, dot), group: kind.slice(dot + 1) };
}

/** 422 Invalid, as the API server sends it. `kind` is `SmtpRelay.cartero.io`, `ConfigMap` or a ServedKind. */
export function statusInvalid(
  kind: string | ServedKind,
  name: string,
  errors: FieldError[],
): Record<string, unknown> {
  const k = splitKind(kind);
  const qualified = k.group ? `${k.kind}.${k.group}` : k.kind;
  const lines = errors.map((e) => `${e.field}: ${e.message}`);
  const agg = lines.length === 1 ? lines[0] : `[${lines.join(', ')}]`;
  return failureStatus(422, 'Invalid', `${qualified} "${name}" is invalid: ${agg}`, {
    name,
    ...(k.group ? { group: k.group } : {}),
    kind: k.kind,
    causes: errors.map((e) => ({ reason: e.type, message: e.message, field: e.field })),
  }) as unknown as Record<string, unknown>;
}

/** 400 BadRequest Status body. */
export function statusBadRequest(message: string): Record<string, unknown> {
  return failureStatus(400, 'BadRequest', message) as unknown as Record<string, unknown>;
}

export type Admission =
  | { ok: true; object: Record<string, unknown>; warnings: string[] }
  | { ok: false; code: 400 | 422; status: Record<string, unknown>; warnings: string[] };

/**
 * What the server does with a create/update body of a custom resource: unknown fields under
 * fieldValidation=Strict are a 400 (`SmtpRelay in version "v1alpha1" cannot be handled as a SmtpRelay:
 * strict decoding error: unknown field "spec.foo"`), schema violations a 422, Warn gives warnings
 * (send each as a `Warning: 299 - "<text>"` header). The API server's default when the request has no
 * fieldValidation parameter is Warn; kubectl sends Strict by default.
 */
export function customResourceAdmission(
  kind: ServedKind,
  obj: Record<string, unknown>,
  mode: 'Strict' | 'Warn' | 'Ignore',
): Admission {
  const res = validateCustomResource(kind.schema ?? open(), obj, mode, { namespaced: kind.namespaced });
  const unknown = res.errors.filter((e) => e.type === 'FieldValueUnknown');
  if (unknown.length > 0) {
    const msg = `${kind.kind} in version "${kind.version}" cannot be handled as a ${kind.kind}: strict decoding error: ${unknown.map((e) => e.message).join(', ')}`;
    return { ok: false, code: 400, status: statusBadRequest(msg), warnings: res.warnings };
  }
  if (res.errors.length > 0) {
    const meta = isObject(obj.metadata) ? obj.metadata : {};
    const name = typeof meta.name === 'string' ? meta.name : '';
    return { ok: false, code: 422, status: statusInvalid(kind, name, res.errors), warnings: res.warnings };
  }
  return { ok: true, object: res.object, warnings: res.warnings };
}
