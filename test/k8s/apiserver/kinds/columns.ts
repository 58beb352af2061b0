/** Builders for the built-in kinds' `kubectl get` columns, and kubectl's age format. */
import { isObject } from '../objects.js';
import type { Column, Json } from './descriptor.js';

/** kubectl's age format (k8s.io/apimachinery/pkg/util/duration.HumanDuration). */
export function humanDuration(ms: number): string {
  const seconds = Math.trunc(ms / 1000);
  if (seconds < -1) return '<invalid>';
  if (seconds < 0) return '0s';
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.trunc(seconds / 60);
  if (minutes < 10) {
    const s = seconds % 60;
    return s === 0 ? `${minutes}m` : `${minutes}m${s}s`;
  }
  if (minutes < 180) return `${minutes}m`;
  const hours = Math.trunc(seconds / 3600);
  if (hours < 8) {
    const m = minutes % 60;
    return m === 0 ? `${hours}h` : `${hours}h${m}m`;
  }
  if (hours < 48) return `${hours}h`;
  if (hours < 24 * 8) {
    const h = hours % 24;
    return h === 0 ? `${Math.trunc(hours / 24)}d` : `${Math.trunc(hours / 24)}d${h}h`;
  }
  if (hours < 24 * 365 * 2) return `${Math.trunc(hours / 24)}d`;
  if (hours < 24 * 365 * 8) {
    const dy = Math.trunc(hours / 24) % 365;
    const y = Math.trunc(hours / 24 / 365);
    return dy === 0 ? `${y}y` : `${y}y${dy}d`;
  }
  return `${Math.trunc(hours / 24 / 365)}y`;
}

export function age(ts: unknown, now: number): string {
  if (typeof ts !== 'string' || ts === '') return '<unknown>';
  const t = Date.parse(ts);
  if (Number.isNaN(t)) return '<invalid>';
  return humanDuration(now - t);
}

/** The value at `path` (keys and list indexes), or undefined. */
export const get = (o: unknown, ...path: (string | number)[]): unknown => {
  let v: unknown = o;
  for (const p of path) {
    if (typeof p === 'number') v = Array.isArray(v) ? v[p] : undefined;
    else v = isObject(v) ? v[p] : undefined;
  }
  return v;
};
/** The list at `path`, or an empty one. */
export const list = (o: unknown, ...path: (string | number)[]): unknown[] =>
  (get(o, ...path) as unknown[] | undefined) ?? [];
export const count = (v: unknown): number =>
  isObject(v) ? Object.keys(v).length : Array.isArray(v) ? v.length : 0;
export const num = (v: unknown): number => (typeof v === 'number' ? v : 0);

export const col = (
  name: string,
  type: string,
  cell: Column['cell'],
  priority = 0,
  description = '',
): Column => ({
  def: { name, type, description, priority },
  cell,
});
export const ageCol = col(
  'Age',
  'string',
  (o, now) => age(get(o, 'metadata', 'creationTimestamp'), now),
  0,
  'CreationTimestamp',
);

/** A label selector (`matchLabels` or a plain map) as `a=b,c=d`. */
export const selector = (s: unknown): string => {
  const labels = get(s, 'matchLabels') ?? s;
  if (!isObject(labels) || Object.keys(labels).length === 0) return '<none>';
  return Object.entries(labels)
    .filter(([, v]) => typeof v === 'string')
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(',');
};

const containerField = (spec: unknown, field: string): string =>
  list(spec, 'containers')
    .map((c) => String(get(c, field) ?? ''))
    .join(',') || '<none>';

/** Ready, then Containers, Images (wide) and Selector (wide, when `withSelector`): workload columns. */
export function workloadColumns(head: Column[], withSelector: boolean): Column[] {
  const template = (o: Json) => get(o, 'spec', 'template', 'spec');
  return [
    ...head,
    ageCol,
    col('Containers', 'string', (o) => containerField(template(o), 'name'), 1),
    col('Images', 'string', (o) => containerField(template(o), 'image'), 1),
    ...(withSelector ? [col('Selector', 'string', (o) => selector(get(o, 'spec', 'selector')), 1)] : []),
  ];
}

/** `ready/desired` of a workload. */
export const readyOfDesired = (o: Json): string =>
  `${num(get(o, 'status', 'readyReplicas'))}/${num(get(o, 'spec', 'replicas') ?? 1)}`;
