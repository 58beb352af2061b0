// The CEL environment of CRD validation rules: Kubernetes' property escaping, JSON values as CEL
// values, the Kubernetes library functions the test server implements (and those it does not), AST
// helpers and error texts (see cel.ts).
import { Environment, parse, type ASTNode } from '@marcbachmann/cel-js';
import { deepEqual, isObject } from '../objects.js';

type Json = Record<string, unknown>;

export const SUPPORTED_REASONS = [
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

export function schemaType(schema: Json): string {
  return typeof schema.type === 'string' ? schema.type : '';
}

export function isRootLike(schema: Json, root: boolean): boolean {
  return root || schema['x-kubernetes-embedded-resource'] === true;
}

const toDuration = parse('duration(s)');

/** The JSON value as the CEL value kube-apiserver would bind (integers as int, formats as types). */
export function toCel(value: unknown, schema: Json | undefined, root = false): unknown {
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

export function newEnvironment(): Environment {
  const env = new Environment({ homogeneousAggregateLiterals: true, enableOptionalTypes: true });
  registerKubernetesLibrary(env);
  return env;
}

// Evaluation runs on plain values with `self`/`oldSelf` as dyn (cel-js cannot bind nested plain objects
// to declared message types); type checking happened at CRD time against the declared types.
let evalEnvs: { plain: Environment; optional: Environment } | undefined;
export function evaluationEnvs(): { plain: Environment; optional: Environment } {
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

export function usesOldSelf(ast: ASTNode): boolean {
  let found = false;
  walkAst(ast, (n) => {
    if (n.op === 'id' && n.args === 'oldSelf') found = true;
  });
  return found;
}

/** The first Kubernetes library function the expression calls that the test server lacks. */
export function unsupportedCall(ast: ASTNode): string | undefined {
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
export function compileErrorText(expr: string, err: unknown): string {
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
export function runtimeErrorText(err: unknown): string {
  const msg = (err as { summary?: string }).summary ?? (err instanceof Error ? err.message : String(err));
  const first = msg.split('\n')[0];
  return first.replace(/^No such key/, 'no such key');
}

/** Go's `%#v` of the internal ValidationRule, as kube-apiserver prints it in CRD errors. */
export function goRule(r: Json): string {
  const s = (v: unknown) => JSON.stringify(typeof v === 'string' ? v : '');
  const ptr = (type: string, v: unknown) => `(*${type})(${v === undefined ? 'nil' : '0xc000a1b2c0'})`;
  return (
    `apiextensions.ValidationRule{Rule:${s(r.rule)}, Message:${s(r.message)}, MessageExpression:${s(r.messageExpression)}, ` +
    `Reason:${ptr('apiextensions.FieldValueErrorReason', r.reason)}, FieldPath:${s(r.fieldPath)}, ` +
    `OptionalOldSelf:${ptr('bool', r.optionalOldSelf)}}`
  );
}
