/** The JSONPath subset CRD printer columns use (`.spec.x`, `[0]`, `[*]`, `['a.b']`, `[?(@.type=="Ready")]`). */
import { deepEqual, isObject } from '../objects.js';

export type Segment =
  | { t: 'field'; name: string }
  | { t: 'index'; i: number }
  | { t: 'all' }
  | { t: 'filter'; path: Segment[]; op: '==' | '!=' | 'exists'; value?: unknown };

function parseLiteral(s: string): unknown {
  const t = s.trim();
  if ((t.startsWith('"') && t.endsWith('"')) || (t.startsWith("'") && t.endsWith("'"))) return t.slice(1, -1);
  if (t === 'true' || t === 'false') return t === 'true';
  if (t !== '' && !Number.isNaN(Number(t))) return Number(t);
  return t;
}

/** Parses `.spec.x`, `{.a.b}`, `.a[0]`, `.a[*].b`, `.a['x.y']`, `.a[?(@.type=="Ready")].status`, `a\.b`. */
export function parseJsonPath(expr: string): Segment[] {
  let s = expr.trim();
  if (s.startsWith('{') && s.endsWith('}')) s = s.slice(1, -1).trim();
  if (s.startsWith('$')) s = s.slice(1);
  const out: Segment[] = [];
  let i = 0;
  while (i < s.length) {
    const c = s[i];
    if (c === '.') {
      i++;
      let name = '';
      while (i < s.length && s[i] !== '.' && s[i] !== '[') {
        if (s[i] === '\\' && i + 1 < s.length) {
          name += s[i + 1];
          i += 2;
        } else name += s[i++];
      }
      if (name) out.push({ t: 'field', name });
    } else if (c === '[') {
      const end = findClose(s, i);
      const inner = s.slice(i + 1, end).trim();
      i = end + 1;
      if (inner === '*') out.push({ t: 'all' });
      else if (/^-?\d+$/.test(inner)) out.push({ t: 'index', i: Number(inner) });
      else if (/^['"].*['"]$/.test(inner)) out.push({ t: 'field', name: inner.slice(1, -1) });
      else if (inner.startsWith('?(') && inner.endsWith(')')) {
        const body = inner.slice(2, -1).trim();
        const m = /^@((?:\.[^=!<>\s]+)+)\s*(==|!=)\s*(.+)$/.exec(body);
        if (m)
          out.push({
            t: 'filter',
            path: parseJsonPath(m[1]),
            op: m[2] as '==' | '!=',
            value: parseLiteral(m[3]),
          });
        else if (/^@((?:\.[^=!<>\s]+)+)$/.test(body))
          out.push({ t: 'filter', path: parseJsonPath(body.slice(1)), op: 'exists' });
        else throw new Error(`unsupported JSONPath filter: ${inner}`);
      } else throw new Error(`unsupported JSONPath segment: [${inner}]`);
    } else {
      // a leading bare name: `spec.x`
      out.push(...parseJsonPath(`.${s.slice(i)}`));
      break;
    }
  }
  return out;
}

function findClose(s: string, open: number): number {
  let depth = 0;
  let quote = '';
  for (let i = open; i < s.length; i++) {
    const c = s[i];
    if (quote) {
      if (c === quote) quote = '';
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '[') depth++;
    else if (c === ']' && --depth === 0) return i;
  }
  throw new Error(`unbalanced [ in JSONPath: ${s}`);
}

/** Evaluates a JSONPath subset; returns every match in order. */
export function evalJsonPath(expr: string | Segment[], obj: unknown): unknown[] {
  const segs = typeof expr === 'string' ? parseJsonPath(expr) : expr;
  let cur: unknown[] = [obj];
  for (const seg of segs) {
    const next: unknown[] = [];
    for (const v of cur) {
      if (seg.t === 'field') {
        if (isObject(v) && v[seg.name] !== undefined) next.push(v[seg.name]);
      } else if (seg.t === 'index') {
        if (Array.isArray(v)) {
          const idx = seg.i < 0 ? v.length + seg.i : seg.i;
          if (idx >= 0 && idx < v.length) next.push(v[idx]);
        }
      } else if (seg.t === 'all') {
        if (Array.isArray(v)) next.push(...v);
        else if (isObject(v)) next.push(...Object.values(v));
      } else if (Array.isArray(v)) {
        for (const item of v) {
          const got = evalJsonPath(seg.path, item);
          if (
            seg.op === 'exists'
              ? got.length > 0
              : (got.length > 0 && deepEqual(got[0], seg.value)) === (seg.op === '==')
          ) {
            next.push(item);
          }
        }
      }
    }
    cur = next;
  }
  return cur;
}
