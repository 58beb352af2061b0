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
//
// The parts: cel/env.ts (values, library, environments), cel/compile.ts (declared types, one rule's
// compilation); here the validator (the schema's rule tree), evaluation and the CRD-time errors.

import { Optional } from '@marcbachmann/cel-js';
import { deepEqual, isObject } from './objects.js';
import type { FieldError } from './openapi.js';
import { compileRule, TypeRegistry, type CompiledRule, type Node } from './cel/compile.js';
import { newEnvironment, runtimeErrorText, schemaType, toCel } from './cel/env.js';

export { escapeProperty } from './cel/env.js';

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
