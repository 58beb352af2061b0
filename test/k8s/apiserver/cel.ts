// CRD validation rules (`x-kubernetes-validations`, CEL) for the test Kubernetes API server, as
// kube-apiserver 1.32 applies them. Pure: no I/O. The expressions run on @marcbachmann/cel-js.
//
// - At CRD create/update (`crdRuleErrors`): each rule is parsed and type-checked against CEL types
//   derived from the schema the way kube-apiserver derives them (objects with properties are
//   message types with exactly those fields, `additionalProperties` maps are map(string, T),
//   `integer` int, `number` double, `format: date|date-time` timestamp, `duration` duration, `byte`
//   bytes, int-or-string dyn, the resource root has apiVersion, kind and metadata.name/generateName).
//   So a syntax error, an unknown field, a type mismatch or an unknown function make the CRD a 422
//   at `spec.versions[i].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[j].rule`.
//   Also checked: message/messageExpression/fieldPath/reason/optionalOldSelf as kube-apiserver does.
// - At custom resource create/update (`CelValidator.validate`): rules sit at any node, `self` is the
//   node's value, rules run only where the value is present (and not null). `oldSelf` is the value
//   at the same place in the stored object: object properties and map entries correlate by key,
//   items of `x-kubernetes-list-type: map` lists by their keys, other list items not at all. A rule
//   that mentions oldSelf (a transition rule) runs only where an old value exists, unless it sets
//   `optionalOldSelf` (then oldSelf is an optional). Validation ratcheting (on by default since 1.30):
//   on update, a failing rule that does not use oldSelf is dropped (a warning) when the value it
//   checks is unchanged.
//
// Not modelled: the cost budget (estimated cost at CRD time, runtime cost limits), RE2 semantics of
// `matches`/`find` (JavaScript regular expressions are used), and the Kubernetes CEL libraries for
// URLs, quantities, IPs/CIDRs, semver, `format.*`, `sets.*`, `strings.*`/`math.*`/`base64.*`
// extensions: a rule calling one of those is accepted at CRD time and then skipped (`unsupported`).

import { Environment, Optional, parse, type ASTNode, type ParseResult } from '@marcbachmann/cel-js';
import { deepEqual, isObject } from './objects.js';
import type { FieldError } from './openapi.js';

type Json = Record<string, unknown>;

/** One entry of `x-kubernetes-validations`. */
export interface ValidationRule {
  rule: string;
  message?: string;
  messageExpression?: string;
  reason?: string;
  fieldPath?: string;
  optionalOldSelf?: boolean;
}

const SUPPORTED_REASONS = [
  'FieldValueDuplicate',
  'FieldValueForbidden',
  'FieldValueInvalid',
  'FieldValueRequired',
];

/** Kubernetes CEL library functions (and extension namespaces) the test server does not implement. */
const UNSUPPORTED_FUNCTIONS = new Set([
  // k8s.io/apiserver/pkg/cel/library: urls, quantity, ip/cidr, semver, format
  'url',
  'isURL',
  'getScheme',
  'getHost',
  'getHostname',
  'getPort',
  'getEscapedPath',
  'getQuery',
  'quantity',
  'isQuantity',
  'sign',
  'isInteger',
  'asInteger',
  'asApproximateFloat',
  'add',
  'sub',
  'isLessThan',
  'isGreaterThan',
  'compareTo',
  'ip',
  'isIP',
  'cidr',
  'isCIDR',
  'family',
  'isUnspecified',
  'isLoopback',
  'isLinkLocalMulticast',
  'isLinkLocalUnicast',
  'isGlobalUnicast',
  'isCanonical',
  'containsIP',
  'containsCIDR',
  'prefixLength',
  'masked',
  'semver',
  'isSemver',
  'major',
  'minor',
  'patch',
  'validate',
  // cel-go strings extension functions not provided
  'format',
  'quote',
]);
const UNSUPPORTED_NAMESPACES = new Set(['sets', 'strings', 'math', 'base64', 'format']);

// ---------------------------------------------------------------------------------------------
// Values and helpers
// ---------------------------------------------------------------------------------------------

const RESERVED = new Set([
  'true',
  'false',
  'null',
  'in',
  'as',
  'break',
  'const',
  'continue',
  'else',
  'for',
  'function',
  'if',
  'import',
  'let',
  'loop',
  'package',
  'namespace',
  'return',
  'var',
  'void',
  'while',
]);

/** A property name as CEL sees it (k8s.io/apiserver/pkg/cel.Escape); undefined when it cannot be accessed. */
export function escapeProperty(name: string): string | undefined {
  if (!/^[a-zA-Z_.\-/][a-zA-Z0-9_.\-/]*$/.test(name)) return undefined;
  if (RESERVED.has(name)) return `__${name}__`;
  return name.replace(/__|[./-]/g, (m) =>
    m === '__' ? '__underscores__' : m === '.' ? '__dot__' : m === '-' ? '__dash__' : '__slash__',
  );
}

function schemaType(schema: Json): string {
  return typeof schema.type === 'string' ? schema.type : '';
}

function isRootLike(schema: Json, root: boolean): boolean {
  return root || schema['x-kubernetes-embedded-resource'] === true;
}

const toDuration = parse('duration(s)');

/** The JSON value as the CEL value kube-apiserver would bind (integers as int, formats as types). */
function toCel(value: unknown, schema: Json | undefined, root = false): unknown {
  if (value === null || value === undefined) return value;
  if (!schema) return untyped(value);
  if (schema['x-kubernetes-int-or-string'] === true) return untyped(value);
  if (typeof value === 'number') {
    if (schemaType(schema) === 'number') return value;
    return Number.isInteger(value) ? BigInt(value) : value;
  }
  if (typeof value === 'string') {
    switch (schema.format) {
      case 'date':
      case 'date-time':
      case 'datetime': {
        const t = new Date(schema.format === 'date' ? `${value}T00:00:00Z` : value);
        return Number.isNaN(t.getTime()) ? value : t;
      }
      case 'duration':
        try {
          return toDuration({ s: value }) as unknown;
        } catch {
          return value;
        }
      case 'byte':
        return new Uint8Array(Buffer.from(value, 'base64'));
      default:
        return value;
    }
  }
  if (Array.isArray(value)) {
    const items = isObject(schema.items) ? schema.items : undefined;
    return value.map((v) => toCel(v, items));
  }
  if (isObject(value)) {
    const props = isObject(schema.properties) ? schema.properties : undefined;
    const additional = isObject(schema.additionalProperties) ? schema.additionalProperties : undefined;
    const out: Json = {};
    for (const [k, v] of Object.entries(value)) {
      if (isRootLike(schema, root) && k === 'metadata' && isObject(v)) {
        // only metadata.name and metadata.generateName are visible to rules
        const meta: Json = {};
        if (typeof v.name === 'string') meta.name = v.name;
        if (typeof v.generateName === 'string') meta.generateName = v.generateName;
        out.metadata = meta;
        continue;
      }
      if (props) {
        const name = escapeProperty(k);
        if (name === undefined) continue;
        out[name] = toCel(v, isObject(props[k]) ? props[k] : undefined);
      } else {
        out[k] = toCel(v, additional);
      }
    }
    return out;
  }
  return value;
}

function untyped(value: unknown): unknown {
  if (typeof value === 'number') return Number.isInteger(value) ? BigInt(value) : value;
  if (Array.isArray(value)) return value.map(untyped);
  if (isObject(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, untyped(v)]));
  return value;
}

function celCompare(a: unknown, b: unknown): number {
  if (typeof a === 'string' && typeof b === 'string') return a < b ? -1 : a > b ? 1 : 0;
  if ((typeof a === 'number' || typeof a === 'bigint') && (typeof b === 'number' || typeof b === 'bigint'))
    return a < b ? -1 : a > b ? 1 : 0;
  if (typeof a === 'boolean' && typeof b === 'boolean') return Number(a) - Number(b);
  if (a instanceof Date && b instanceof Date) return a.getTime() - b.getTime();
  throw new Error('no such overload');
}

/** The Kubernetes list, regex and string library functions that cel-js lacks. */
function registerKubernetesLibrary(env: Environment): void {
  env.registerFunction('list<T>.isSorted(): bool', (l: unknown[]) =>
    l.every((x, i) => i === 0 || celCompare(l[i - 1], x) <= 0),
  );
  env.registerFunction('list<T>.sum(): T', (l: unknown[]) => {
    if (l.length === 0) return 0n;
    return l.reduce((a, b) =>
      typeof a === 'bigint' && typeof b === 'bigint' ? a + b : Number(a) + Number(b),
    );
  });
  const pick = (l: unknown[], sign: number, name: string): unknown => {
    if (l.length === 0) throw new Error(`${name} called on empty list`);
    return l.reduce((a, b) => (celCompare(b, a) * sign > 0 ? b : a));
  };
  env.registerFunction('list<T>.min(): T', (l: unknown[]) => pick(l, -1, 'min'));
  env.registerFunction('list<T>.max(): T', (l: unknown[]) => pick(l, 1, 'max'));
  env.registerFunction('list<T>.indexOf(T): int', (l: unknown[], v: unknown) =>
    BigInt(l.findIndex((x) => deepEqual(x, v))),
  );
  env.registerFunction('list<T>.lastIndexOf(T): int', (l: unknown[], v: unknown) => {
    for (let i = l.length - 1; i >= 0; i--) if (deepEqual(l[i], v)) return BigInt(i);
    return -1n;
  });
  env.registerFunction(
    'string.find(string): string',
    (s: string, re: string) => new RegExp(re, 'u').exec(s)?.[0] ?? '',
  );
  const findAll = (s: string, re: string, limit: bigint): string[] => {
    const out = [...s.matchAll(new RegExp(re, 'gu'))].map((m) => m[0]);
    return limit < 0n ? out : out.slice(0, Number(limit));
  };
  env.registerFunction('string.findAll(string): list<string>', (s: string, re: string) =>
    findAll(s, re, -1n),
  );
  env.registerFunction('string.findAll(string, int): list<string>', findAll);
  env.registerFunction('string.charAt(int): string', (s: string, i: bigint) => {
    const chars = [...s];
    if (i < 0n || i > BigInt(chars.length)) throw new Error(`index out of range: ${i}`);
    return chars[Number(i)] ?? '';
  });
  env.registerFunction('string.replace(string, string): string', (s: string, a: string, b: string) =>
    s.split(a).join(b),
  );
  env.registerFunction(
    'string.replace(string, string, int): string',
    (s: string, a: string, b: string, n: bigint) => {
      if (n < 0n) return s.split(a).join(b);
      let out = s;
      let from = 0;
      for (let i = 0n; i < n; i++) {
        const at = out.indexOf(a, from);
        if (at < 0) break;
        out = out.slice(0, at) + b + out.slice(at + a.length);
        from = at + b.length;
      }
      return out;
    },
  );
  env.registerFunction('string.reverse(): string', (s: string) => [...s].reverse().join(''));
  // cel-go's identity conversions
  env.registerFunction('timestamp(google.protobuf.Timestamp): google.protobuf.Timestamp', (t: unknown) => t);
  env.registerFunction('duration(google.protobuf.Duration): google.protobuf.Duration', (d: unknown) => d);
}

function newEnvironment(): Environment {
  const env = new Environment({ homogeneousAggregateLiterals: true, enableOptionalTypes: true });
  registerKubernetesLibrary(env);
  return env;
}

// Evaluation runs on plain values with `self`/`oldSelf` as dyn (cel-js cannot bind nested plain objects
// to declared message types); type checking happened at CRD time against the declared types.
let evalEnvs: { plain: Environment; optional: Environment } | undefined;
function evaluationEnvs(): { plain: Environment; optional: Environment } {
  if (!evalEnvs) {
    const base = newEnvironment();
    evalEnvs = {
      plain: base.clone().registerVariable('self', 'dyn').registerVariable('oldSelf', 'dyn'),
      optional: base.clone().registerVariable('self', 'dyn').registerVariable('oldSelf', 'optional<dyn>'),
    };
  }
  return evalEnvs;
}

function walkAst(node: unknown, visit: (n: ASTNode) => void): void {
  if (Array.isArray(node)) {
    for (const n of node) walkAst(n, visit);
    return;
  }
  if (typeof node !== 'object' || node === null || !('op' in node) || !('args' in node)) return;
  visit(node as ASTNode);
  walkAst((node as { args: unknown }).args, visit);
}

function usesOldSelf(ast: ASTNode): boolean {
  let found = false;
  walkAst(ast, (n) => {
    if (n.op === 'id' && n.args === 'oldSelf') found = true;
  });
  return found;
}

/** The first Kubernetes library function the expression calls that the test server lacks. */
function unsupportedCall(ast: ASTNode): string | undefined {
  let found: string | undefined;
  walkAst(ast, (n) => {
    if (found) return;
    if (n.op === 'call' && UNSUPPORTED_FUNCTIONS.has(n.args[0])) found = n.args[0];
    if (n.op === 'rcall') {
      const [name, receiver] = n.args;
      if (receiver.op === 'id' && UNSUPPORTED_NAMESPACES.has(receiver.args))
        found = `${receiver.args}.${name}`;
      else if (UNSUPPORTED_FUNCTIONS.has(name)) found = name;
    }
  });
  return found;
}

/** cel-go's rendering of a compile error: `ERROR: <input>:1:6: ...` and the line with a caret. */
function compileErrorText(expr: string, err: unknown): string {
  const e = err as { summary?: string; message?: string; range?: { start: number } };
  const summary = (e.summary ?? e.message ?? String(err))
    .split('\n')[0]
    // cel-go's words for the two most common mistakes
    .replace(/^No such key: (.*)$/, "undefined field '$1'")
    .replace(/^Unknown variable: (.*)$/, "undeclared reference to '$1' (in container '')");
  const start = Math.max(0, Math.min(e.range?.start ?? 0, expr.length));
  const before = expr.slice(0, start);
  const line = before.split('\n').length;
  const lineStart = before.lastIndexOf('\n') + 1;
  const col = start - lineStart;
  const text = expr.split('\n')[line - 1] ?? '';
  return `ERROR: <input>:${line}:${col + 1}: ${summary}\n | ${text}\n | ${'.'.repeat(col)}^`;
}

/** The runtime error text as cel-go words it (`no such key: x`). */
function runtimeErrorText(err: unknown): string {
  const msg = (err as { summary?: string }).summary ?? (err instanceof Error ? err.message : String(err));
  const first = msg.split('\n')[0];
  return first.replace(/^No such key/, 'no such key');
}

/** Go's `%#v` of the internal ValidationRule, as kube-apiserver prints it in CRD errors. */
function goRule(r: Json): string {
  const s = (v: unknown) => JSON.stringify(typeof v === 'string' ? v : '');
  const ptr = (type: string, v: unknown) => `(*${type})(${v === undefined ? 'nil' : '0xc000a1b2c0'})`;
  return (
    `apiextensions.ValidationRule{Rule:${s(r.rule)}, Message:${s(r.message)}, MessageExpression:${s(r.messageExpression)}, ` +
    `Reason:${ptr('apiextensions.FieldValueErrorReason', r.reason)}, FieldPath:${s(r.fieldPath)}, ` +
    `OptionalOldSelf:${ptr('bool', r.optionalOldSelf)}}`
  );
}

// ---------------------------------------------------------------------------------------------
// Declared types (kube-apiserver's SchemaDeclType) and compilation
// ---------------------------------------------------------------------------------------------

class TypeRegistry {
  private n = 0;
  private readonly memo = new Map<Json, string>();
  readonly messageTypes: string[] = [];
  constructor(readonly env: Environment) {}

  /** The type declared for a schema node earlier (`dyn` for nodes never declared). */
  of(schema: Json): string {
    return this.memo.get(schema) ?? 'dyn';
  }

  /** The CEL type of a schema node, registering message types for objects (kube-apiserver's SchemaDeclType). */
  declType(schema: Json | undefined, root = false): string {
    if (!schema) return 'dyn';
    const known = this.memo.get(schema);
    if (known) return known;
    const t = this.compute(schema, root);
    this.memo.set(schema, t);
    return t;
  }

  private compute(schema: Json, root: boolean): string {
    const embedded = (s: Json): boolean => s['x-kubernetes-embedded-resource'] === true;
    if (schema['x-kubernetes-int-or-string'] === true) return 'dyn';
    switch (schema.type) {
      case 'array':
        return `list<${isObject(schema.items) ? this.declType(schema.items, embedded(schema.items)) : 'dyn'}>`;
      case 'object': {
        if (isObject(schema.additionalProperties)) {
          const ap = schema.additionalProperties;
          return `map<string, ${this.declType(ap, embedded(ap))}>`;
        }
        // the declared properties only (also with x-kubernetes-preserve-unknown-fields)
        const props: Json = isObject(schema.properties) ? { ...schema.properties } : {};
        if (isRootLike(schema, root)) {
          props.apiVersion = { type: 'string' };
          props.kind = { type: 'string' };
          props.metadata = {
            type: 'object',
            properties: { name: { type: 'string' }, generateName: { type: 'string' } },
          };
        }
        const fields: Record<string, string> = {};
        for (const [k, v] of Object.entries(props)) {
          const name = escapeProperty(k);
          if (name === undefined || !isObject(v)) continue;
          fields[name] = this.declType(v, embedded(v));
        }
        const typeName = `Object_${++this.n}`;
        // a constructor of its own: the generated one cannot hold timestamp/duration fields (cel-js 8.0.0);
        // values are never bound to these types (evaluation uses dyn), they only serve type checking
        const ctor = { [typeName]: class {} }[typeName];
        this.env.registerType(typeName, { ctor, fields });
        this.messageTypes.push(typeName);
        return typeName;
      }
      case 'string':
        if (schema.format === 'byte') return 'bytes';
        if (schema.format === 'duration') return 'google.protobuf.Duration';
        if (schema.format === 'date' || schema.format === 'date-time' || schema.format === 'datetime')
          return 'google.protobuf.Timestamp';
        return 'string';
      case 'boolean':
        return 'bool';
      case 'number':
        return 'double';
      case 'integer':
        return 'int';
      default:
        return 'dyn';
    }
  }
}

interface CompiledRule extends ValidationRule {
  program?: ParseResult;
  messageProgram?: ParseResult;
  usesOldSelf: boolean;
  /** `fieldPath` as a field path suffix: `.a.b` → `a.b`, `.m['k.x']` → `m[k.x]`. */
  fieldSuffix?: string;
  /** A Kubernetes library function the test server does not implement: the rule is skipped. */
  unsupported?: string;
}

interface Node {
  schema: Json;
  type: string;
  rules: CompiledRule[];
  properties: Map<string, Node>;
  additional?: Node;
  items?: Node;
  allOf: Node[];
  /** Keys of an `x-kubernetes-list-type: map` list (items correlate with old items by them). */
  mapKeys?: string[];
  /** Whether this node or one below it has rules (evaluation skips the others). */
  active: boolean;
}

/** Parses a rule's fieldPath (`.a.b`, `['x.y']`) against the schema; returns the path suffix or an error. */
function parseFieldPath(path: string, schema: Json): { suffix?: string; error?: string } {
  let s: Json | undefined = schema;
  const parts: string[] = [];
  let i = 0;
  const step = (name: string): string | undefined => {
    if (!s) return 'does not refer to a valid field';
    if (isObject(s.properties)) {
      const next: unknown = s.properties[name];
      if (!isObject(next)) return 'does not refer to a valid field';
      parts.push(parts.length === 0 ? name : `.${name}`);
      s = next;
    } else if (isObject(s.additionalProperties)) {
      parts.push(`[${name}]`);
      s = s.additionalProperties;
    } else return 'does not refer to a valid field';
    return undefined;
  };
  while (i < path.length) {
    const c = path[i];
    if (c === '.') {
      let j = i + 1;
      while (j < path.length && !'.[]'.includes(path[j])) j++;
      if (j === i + 1) return { error: 'unexpected end of JSON path' };
      const err = step(path.slice(i + 1, j));
      if (err) return { error: err };
      i = j;
    } else if (c === '[') {
      if (path[i + 1] !== "'") return { error: 'expected single quoted string' };
      let j = i + 2;
      while (j < path.length && !(path[j] === "'" && path[j - 1] !== '\\')) j++;
      if (j >= path.length || path[j + 1] !== ']') return { error: 'unexpected end of JSON path' };
      const err = step(path.slice(i + 2, j).replace(/\\(.)/g, '$1'));
      if (err) return { error: err };
      i = j + 2;
    } else return { error: `expected [ or . but got: ${c}` };
  }
  return { suffix: parts.join('') };
}

function newlines(s: string): boolean {
  return /[\n\r]/.test(s);
}

/** A CEL validator for one CRD version's openAPIV3Schema. */
export class CelValidator {
  private constructor(
    private readonly root: Node,
    readonly ruleCount: number,
  ) {}

  /**
   * Compiles every rule of the schema. `errors` are what kube-apiserver reports for the CRD, with
   * fields under `basePath` (e.g. `spec.versions[0].schema.openAPIV3Schema`).
   */
  static compile(
    schema: Json,
    basePath = 'openAPIV3Schema',
  ): { validator: CelValidator; errors: FieldError[] } {
    const errors: FieldError[] = [];
    const types = new TypeRegistry(newEnvironment());
    let ruleCount = 0;
    // pass 1: declared types for the whole tree (message types must all be registered before the
    // environments for the rules are cloned from this one)
    types.declType(schema, true);
    for (const t of types.messageTypes)
      types.env.registerOperator(`${t} == ${t}`, (a: unknown, b: unknown) => deepEqual(a, b));

    // pass 2: rules
    const build = (
      s: Json,
      path: string,
      root: boolean,
      uncorrelatable: string | undefined,
      structural: Json,
      declType: string,
    ): Node => {
      const node: Node = {
        schema: structural,
        type: schemaType(structural),
        rules: [],
        properties: new Map(),
        allOf: [],
        active: false,
      };
      if (
        structural['x-kubernetes-list-type'] === 'map' &&
        Array.isArray(structural['x-kubernetes-list-map-keys'])
      )
        node.mapKeys = structural['x-kubernetes-list-map-keys'].filter(
          (k): k is string => typeof k === 'string',
        );
      const rules = Array.isArray(s['x-kubernetes-validations']) ? s['x-kubernetes-validations'] : [];
      if (rules.length > 0) {
        const envs = {
          plain: types.env.clone().registerVariable('self', declType).registerVariable('oldSelf', declType),
          optional: types.env
            .clone()
            .registerVariable('self', declType)
            .registerVariable('oldSelf', `optional<${declType}>`),
        };
        rules.forEach((raw: unknown, i: number) => {
          const at = `${path}.x-kubernetes-validations[${i}]`;
          const r = isObject(raw) ? raw : {};
          const compiled = compileRule(r, at, structural, envs, uncorrelatable, errors);
          if (compiled) {
            node.rules.push(compiled);
            ruleCount++;
          }
        });
      }
      if (isObject(s.properties)) {
        for (const [k, v] of Object.entries(s.properties)) {
          if (!isObject(v)) continue;
          node.properties.set(
            k,
            build(
              v,
              `${path}.properties[${k}]`,
              v['x-kubernetes-embedded-resource'] === true,
              uncorrelatable,
              v,
              types.of(v),
            ),
          );
        }
      }
      if (isObject(s.items)) {
        const correlatable = structural['x-kubernetes-list-type'] === 'map';
        node.items = build(
          s.items,
          `${path}.items`,
          s.items['x-kubernetes-embedded-resource'] === true,
          correlatable ? uncorrelatable : (uncorrelatable ?? path),
          s.items,
          types.of(s.items),
        );
      }
      if (isObject(s.additionalProperties)) {
        const ap = s.additionalProperties;
        node.additional = build(
          ap,
          `${path}.additionalProperties`,
          ap['x-kubernetes-embedded-resource'] === true,
          uncorrelatable,
          ap,
          types.of(ap),
        );
      }
      if (Array.isArray(s.allOf)) {
        s.allOf.forEach((a: unknown, i: number) => {
          // allOf rules see the node's own type
          if (isObject(a))
            node.allOf.push(build(a, `${path}.allOf[${i}]`, root, uncorrelatable, structural, declType));
        });
      }
      node.active =
        node.rules.length > 0 ||
        node.allOf.some((n) => n.active) ||
        [...node.properties.values()].some((n) => n.active) ||
        node.items?.active === true ||
        node.additional?.active === true;
      return node;
    };
    const root = build(schema, basePath, true, undefined, schema, types.of(schema));
    return { validator: new CelValidator(root, ruleCount), errors };
  }

  /**
   * Evaluates the rules against `obj` (and `old` on update). `errors` make the write a 422;
   * `warnings` are ratcheted failures (unchanged values on update), as `<field>: <message>`.
   */
  validate(obj: Json, old?: Json): { errors: FieldError[]; warnings: string[] } {
    const out = { errors: [] as FieldError[], warnings: [] as string[] };
    if (this.ruleCount === 0) return out;
    const rootEqual = old !== undefined && deepEqual(obj, old);
    visit(this.root, obj, old, '', rootEqual, true, out);
    return out;
  }
}

function compileRule(
  r: Json,
  at: string,
  structural: Json,
  envs: { plain: Environment; optional: Environment },
  uncorrelatable: string | undefined,
  errors: FieldError[],
): CompiledRule | undefined {
  const rule = typeof r.rule === 'string' ? r.rule : '';
  const message = typeof r.message === 'string' ? r.message : undefined;
  const messageExpression = typeof r.messageExpression === 'string' ? r.messageExpression : undefined;
  const reason = typeof r.reason === 'string' ? r.reason : undefined;
  const fieldPath = typeof r.fieldPath === 'string' ? r.fieldPath : undefined;
  const optionalOldSelf = typeof r.optionalOldSelf === 'boolean' ? r.optionalOldSelf : undefined;
  const invalid = (field: string, value: string, detail: string): void => {
    errors.push({ field, type: 'FieldValueInvalid', message: `Invalid value: ${value}: ${detail}` });
  };
  const before = errors.length;
  // static checks (kube-apiserver's ValidateCustomResourceDefinitionOpenAPISchema)
  if (rule.trim() === '') {
    errors.push({
      field: `${at}.rule`,
      type: 'FieldValueRequired',
      message: 'Required value: rule is not specified',
    });
  } else if (message !== undefined && message.length > 0 && message.trim() === '') {
    invalid(`${at}.message`, JSON.stringify(message), 'message must be non-empty if specified');
  } else if (message !== undefined && newlines(message.trim())) {
    invalid(`${at}.message`, JSON.stringify(message), 'message must not contain line breaks');
  } else if (newlines(rule.trim()) && !(message ?? '').trim()) {
    errors.push({
      field: `${at}.message`,
      type: 'FieldValueRequired',
      message: 'Required value: message must be specified if rule contains line breaks',
    });
  }
  if (messageExpression !== undefined && messageExpression.length > 0 && messageExpression.trim() === '') {
    errors.push({
      field: `${at}.messageExpression`,
      type: 'FieldValueRequired',
      message: 'Required value: messageExpression must be non-empty if specified',
    });
  }
  if (reason !== undefined && !SUPPORTED_REASONS.includes(reason)) {
    errors.push({
      field: `${at}.reason`,
      type: 'FieldValueNotSupported',
      message: `Unsupported value: ${JSON.stringify(reason)}: supported values: ${SUPPORTED_REASONS.map((x) => JSON.stringify(x)).join(', ')}`,
    });
  }
  let fieldSuffix: string | undefined;
  if (fieldPath !== undefined && fieldPath.length > 0) {
    if (fieldPath.trim() === '')
      invalid(`${at}.fieldPath`, JSON.stringify(fieldPath), 'fieldPath must be non-empty if specified');
    else if (newlines(fieldPath))
      invalid(`${at}.fieldPath`, JSON.stringify(fieldPath), 'fieldPath must not contain line breaks');
    else {
      const parsed = parseFieldPath(fieldPath.trim(), structural);
      if (parsed.error)
        invalid(`${at}.fieldPath`, JSON.stringify(fieldPath), 'fieldPath must be a valid path');
      else fieldSuffix = parsed.suffix;
    }
  }
  if (errors.length > before) return undefined;

  const compiled: CompiledRule = { rule, usesOldSelf: false };
  if (message !== undefined) compiled.message = message;
  if (messageExpression !== undefined) compiled.messageExpression = messageExpression;
  if (reason !== undefined) compiled.reason = reason;
  if (fieldPath !== undefined) compiled.fieldPath = fieldPath;
  if (optionalOldSelf !== undefined) compiled.optionalOldSelf = optionalOldSelf;
  if (fieldSuffix) compiled.fieldSuffix = fieldSuffix;
  const ruleValue = goRule(r);

  // the rule: parse, look for unsupported library calls, type-check against the declared types
  const env = optionalOldSelf === true ? envs.optional : envs.plain;
  let ast: ASTNode;
  try {
    ast = env.parse(rule).ast;
  } catch (err) {
    invalid(`${at}.rule`, ruleValue, `compilation failed: ${compileErrorText(rule, err)}`);
    return undefined;
  }
  compiled.usesOldSelf = usesOldSelf(ast);
  compiled.unsupported = unsupportedCall(ast);
  if (!compiled.unsupported) {
    const checked = env.check(rule);
    if (!checked.valid) {
      invalid(`${at}.rule`, ruleValue, `compilation failed: ${compileErrorText(rule, checked.error)}`);
      return undefined;
    }
    if (checked.type !== 'bool' && checked.type !== 'dyn') {
      invalid(`${at}.rule`, ruleValue, 'cel expression must evaluate to a bool');
      return undefined;
    }
    const evalEnv = optionalOldSelf === true ? evaluationEnvs().optional : evaluationEnvs().plain;
    compiled.program = evalEnv.parse(rule);
  }
  if (compiled.usesOldSelf && uncorrelatable !== undefined) {
    invalid(
      `${at}.rule`,
      JSON.stringify(rule),
      `oldSelf cannot be used on the uncorrelatable portion of the schema within ${uncorrelatable}`,
    );
    return undefined;
  }
  if (!compiled.usesOldSelf && optionalOldSelf !== undefined) {
    invalid(
      `${at}.optionalOldSelf`,
      String(optionalOldSelf),
      'may not be set if oldSelf is not used in rule',
    );
    return undefined;
  }

  // messageExpression: must compile to a string
  if (messageExpression !== undefined && messageExpression.trim() !== '') {
    let mast: ASTNode | undefined;
    try {
      mast = envs.plain.parse(messageExpression).ast;
    } catch (err) {
      invalid(
        `${at}.messageExpression`,
        ruleValue,
        `messageExpression compilation failed: ${compileErrorText(messageExpression, err)}`,
      );
      return undefined;
    }
    if (!unsupportedCall(mast)) {
      const checked = (optionalOldSelf === true ? envs.optional : envs.plain).check(messageExpression);
      if (!checked.valid) {
        invalid(
          `${at}.messageExpression`,
          ruleValue,
          `messageExpression compilation failed: ${compileErrorText(messageExpression, checked.error)}`,
        );
        return undefined;
      }
      if (checked.type !== 'string' && checked.type !== 'dyn') {
        invalid(`${at}.messageExpression`, ruleValue, 'messageExpression must evaluate to a string');
        return undefined;
      }
      compiled.messageProgram = (
        optionalOldSelf === true ? evaluationEnvs().optional : evaluationEnvs().plain
      ).parse(messageExpression);
    }
  }
  return compiled;
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

function ruleErrorString(r: CompiledRule): string {
  return (r.message ?? '').trim() || r.rule.trim();
}

function ruleMessageOrDefault(r: CompiledRule): string {
  const m = (r.message ?? '').trim();
  return m || `failed rule: ${ruleErrorString(r)}`;
}

function fieldErrorForReason(field: string, type: string, detail: string, reason?: string): FieldError {
  switch (reason) {
    case 'FieldValueForbidden':
      return { field, type: reason, message: `Forbidden: ${detail}` };
    case 'FieldValueRequired':
      return { field, type: reason, message: `Required value: ${detail}` };
    case 'FieldValueDuplicate':
      return { field, type: reason, message: `Duplicate value: ${JSON.stringify(type)}` };
    default:
      return {
        field,
        type: 'FieldValueInvalid',
        message: `Invalid value: ${JSON.stringify(type)}: ${detail}`,
      };
  }
}

/** A message expression's result, or undefined to fall back to the message (kube-apiserver's rules). */
function evalMessage(r: CompiledRule, ctx: Json): string | undefined {
  if (!r.messageProgram) return undefined;
  try {
    const v: unknown = r.messageProgram(ctx);
    if (typeof v !== 'string') return undefined;
    const t = v.trim();
    if (t === '' || t.length > 5 * 1024 || /\n/.test(t)) return undefined;
    return t;
  } catch {
    return undefined;
  }
}

function visit(
  node: Node,
  value: unknown,
  old: unknown,
  path: string,
  ratchet: boolean,
  root: boolean,
  out: { errors: FieldError[]; warnings: string[] },
  correlated = true,
): void {
  if (value === null || value === undefined || !node.active) return;
  const display = path || '<nil>';
  if (node.rules.length > 0) {
    const self = toCel(value, node.schema, root);
    const oldSelf = old === null || old === undefined ? undefined : toCel(old, node.schema, root);
    for (const r of node.rules) {
      if (r.unsupported || !r.program) continue;
      if (r.usesOldSelf && oldSelf === undefined && r.optionalOldSelf !== true) continue;
      const ctx: Json = { self };
      if (r.usesOldSelf)
        ctx.oldSelf =
          r.optionalOldSelf === true
            ? oldSelf === undefined
              ? Optional.none()
              : Optional.of(oldSelf)
            : oldSelf;
      let result: unknown;
      try {
        result = r.program(ctx);
      } catch (err) {
        const text = runtimeErrorText(err);
        const detail = /^(no such overload|found no matching overload)/.test(text)
          ? `'${text}': call arguments did not match a supported operator, function or macro signature for rule: ${ruleErrorString(r)}`
          : `${text} evaluating rule: ${ruleErrorString(r)}`;
        out.errors.push(fieldErrorForReason(display, node.type, detail));
        continue;
      }
      if (result === true) continue;
      const field = r.fieldSuffix ? (path ? `${path}.${r.fieldSuffix}` : r.fieldSuffix) : display;
      const detail = evalMessage(r, ctx) ?? ruleMessageOrDefault(r);
      const e = fieldErrorForReason(field, node.type, detail, r.reason);
      if (!r.usesOldSelf && ratchet) out.warnings.push(`${e.field}: ${e.message}`);
      else out.errors.push(e);
    }
  }
  // allOf rules: never ratcheted (as kube-apiserver)
  for (const a of node.allOf) visit(a, value, old, path, false, root, out, correlated);

  if (Array.isArray(value) && node.items) {
    const oldList = Array.isArray(old) ? old : [];
    value.forEach((item, i) => {
      if (!node.mapKeys || !correlated) {
        // not correlatable: no oldSelf below here, and errors ratchet with the list (kube-apiserver's
        // nearest correlatable parent)
        visit(node.items!, item, undefined, `${path}[${i}]`, ratchet, false, out, false);
        return;
      }
      const keys = node.mapKeys;
      const oldItem = isObject(item)
        ? oldList.find((o) => isObject(o) && keys.every((k) => deepEqual(o[k], item[k])))
        : undefined;
      const same = oldItem !== undefined && deepEqual(item, oldItem);
      visit(node.items!, item, oldItem, `${path}[${i}]`, same, false, out);
    });
  } else if (isObject(value)) {
    const oldMap = isObject(old) ? old : {};
    for (const [k, v] of Object.entries(value)) {
      const child = node.properties.get(k) ?? node.additional;
      if (!child) continue;
      const o = oldMap[k];
      const same = correlated ? o !== undefined && deepEqual(v, o) : ratchet;
      const at = node.properties.has(k) ? (path ? `${path}.${k}` : k) : `${path}[${k}]`;
      visit(child, v, o, at, same, false, out, correlated);
    }
  }
}

/**
 * The CRD errors for every served version's rules (`spec.versions[i].schema.openAPIV3Schema...`),
 * as kube-apiserver reports them when a CRD is created or updated.
 */
export function crdRuleErrors(crd: Json): FieldError[] {
  const spec = isObject(crd.spec) ? crd.spec : {};
  const versions = Array.isArray(spec.versions) ? spec.versions : [];
  const errors: FieldError[] = [];
  versions.forEach((v: unknown, i: number) => {
    if (!isObject(v) || !isObject(v.schema) || !isObject(v.schema.openAPIV3Schema)) return;
    const base = `spec.versions[${i}].schema.openAPIV3Schema`;
    try {
      errors.push(...CelValidator.compile(v.schema.openAPIV3Schema, base).errors);
    } catch (err) {
      // a schema the CEL type mapping cannot take (kube-apiserver: an internal error, too)
      errors.push({
        field: `${base}.x-kubernetes-validations`,
        type: 'InternalError',
        message: `Internal error: failed to construct type information for x-kubernetes-validations rules: ${err instanceof Error ? err.message : String(err)}`,
      });
    }
  });
  return errors;
}
