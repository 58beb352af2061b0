/** Label selectors (equality- and set-based) and field selectors, as the list and watch APIs take them. */
import { badRequest } from './errors.js';

type LabelRequirement =
  { op: 'exists' | 'notexists'; key: string } | { op: 'in' | 'notin'; key: string; values: string[] };

export type Labels = Record<string, string> | undefined;

/** Splits on commas that are not inside parentheses. */
function splitTerms(text: string): string[] {
  const terms: string[] = [];
  let depth = 0;
  let current = '';
  for (const ch of text) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      terms.push(current);
      current = '';
    } else current += ch;
  }
  terms.push(current);
  return terms.map((t) => t.trim()).filter((t) => t !== '');
}

function parseSet(key: string, op: 'in' | 'notin', rest: string, term: string): LabelRequirement {
  const m = /^\((.*)\)$/.exec(rest.trim());
  if (!m) throw badRequest(`unable to parse requirement: found '${term}', expected: '('`);
  const values = m[1]
    .split(',')
    .map((v) => v.trim())
    .filter((v) => v !== '');
  return { op, key, values };
}

function parseTerm(term: string): LabelRequirement {
  if (term.startsWith('!')) return { op: 'notexists', key: term.slice(1).trim() };
  const set = /^([^\s=!]+)\s+(in|notin)\s*(.*)$/.exec(term);
  if (set) return parseSet(set[1], set[2] as 'in' | 'notin', set[3], term);
  const eq = /^([^\s=!]+)\s*(==|=|!=)\s*(.*)$/.exec(term);
  if (eq) {
    const value = eq[3].trim();
    if (/[\s,()=!]/.test(value))
      throw badRequest(`unable to parse requirement: invalid label value: "${value}"`);
    return { op: eq[2] === '!=' ? 'notin' : 'in', key: eq[1], values: [value] };
  }
  if (/^[^\s=!(),]+$/.test(term)) return { op: 'exists', key: term };
  throw badRequest(`unable to parse requirement: "${term}"`);
}

/** A parsed label selector; `matches` answers for one object's labels. */
export class LabelSelector {
  private constructor(private readonly reqs: LabelRequirement[]) {}

  static parse(text: string | undefined | null): LabelSelector {
    return new LabelSelector(text ? splitTerms(text).map(parseTerm) : []);
  }

  get empty(): boolean {
    return this.reqs.length === 0;
  }

  matches(labels: Labels): boolean {
    const l = labels ?? {};
    return this.reqs.every((r) => {
      const has = Object.prototype.hasOwnProperty.call(l, r.key);
      switch (r.op) {
        case 'exists':
          return has;
        case 'notexists':
          return !has;
        case 'in':
          return has && r.values.includes(l[r.key]);
        case 'notin':
          return !has || !r.values.includes(l[r.key]);
      }
    });
  }
}

interface FieldRequirement {
  path: string[];
  value: string;
  negate: boolean;
}

/** Reads a dotted path (`metadata.name`, `spec.nodeName`) as a string; missing reads as ''. */
function fieldValue(obj: unknown, path: string[]): string {
  let cur: unknown = obj;
  for (const p of path) {
    if (cur === null || typeof cur !== 'object') return '';
    cur = (cur as Record<string, unknown>)[p];
  }
  if (cur === undefined || cur === null) return '';
  return typeof cur === 'object' ? JSON.stringify(cur) : String(cur);
}

/**
 * A parsed field selector. `metadata.name` and `metadata.namespace` work for every kind, as on a
 * real server; other dotted paths are compared as strings too (more lenient than kube-apiserver).
 */
export class FieldSelector {
  private constructor(private readonly reqs: FieldRequirement[]) {}

  static parse(text: string | undefined | null): FieldSelector {
    if (!text) return new FieldSelector([]);
    const reqs = text
      .split(',')
      .map((t) => t.trim())
      .filter((t) => t !== '')
      .map((term) => {
        const m = /^([A-Za-z0-9_.-]+)\s*(==|=|!=)\s*(.*)$/.exec(term);
        if (!m) throw badRequest(`invalid selector: '${text}'; can't understand '${term}'`);
        return { path: m[1].split('.'), value: m[3].trim(), negate: m[2] === '!=' };
      });
    return new FieldSelector(reqs);
  }

  /** The name an equality requirement on metadata.name pins, if any. */
  get name(): string | undefined {
    return this.reqs.find((r) => !r.negate && r.path.join('.') === 'metadata.name')?.value;
  }

  matches(obj: unknown): boolean {
    return this.reqs.every((r) => (fieldValue(obj, r.path) === r.value) !== r.negate);
  }
}
