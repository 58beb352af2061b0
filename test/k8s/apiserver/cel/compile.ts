// Declared types (kube-apiserver's SchemaDeclType) and the compilation of one rule (see cel.ts).
import { Environment, type ASTNode, type ParseResult } from '@marcbachmann/cel-js';
import type { ValidationRule } from '../cel.js';
import { isObject } from '../objects.js';
import type { FieldError } from '../openapi.js';
import {
  compileErrorText,
  escapeProperty,
  evaluationEnvs,
  goRule,
  isRootLike,
  SUPPORTED_REASONS,
  unsupportedCall,
  usesOldSelf,
} from './env.js';

type Json = Record<string, unknown>;

export class TypeRegistry {
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

export interface CompiledRule extends ValidationRule {
  program?: ParseResult;
  messageProgram?: ParseResult;
  usesOldSelf: boolean;
  /** `fieldPath` as a field path suffix: `.a.b` → `a.b`, `.m['k.x']` → `m[k.x]`. */
  fieldSuffix?: string;
  /** A Kubernetes library function the test server does not implement: the rule is skipped. */
  unsupported?: string;
}

export interface Node {
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

export function compileRule(
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
