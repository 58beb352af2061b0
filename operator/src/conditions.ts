/**
 * Kubernetes-style conditions: set one, keeping lastTransitionTime unless the status changed; and the
 * problems (reason, message) the pure checks return for them.
 */
import type { Condition } from './api/types.js';

/** Problems a human must fix; reported in conditions and events, never thrown. */
export interface Problem {
  reason: string;
  message: string;
}

export type ConditionInput = Omit<Condition, 'lastTransitionTime' | 'observedGeneration'>;

export function setCondition(
  list: Condition[] | undefined,
  c: ConditionInput,
  generation: number | undefined,
  now: Date,
): Condition[] {
  const old = (list ?? []).find((x) => x.type === c.type);
  const next: Condition = {
    type: c.type,
    status: c.status,
    reason: c.reason,
    message: c.message,
    ...(generation !== undefined ? { observedGeneration: generation } : {}),
    lastTransitionTime:
      old && old.status === c.status && old.lastTransitionTime
        ? old.lastTransitionTime
        : now.toISOString().replace(/\.\d{3}Z$/, 'Z'),
  };
  return [...(list ?? []).filter((x) => x.type !== c.type), next].sort((a, b) =>
    a.type.localeCompare(b.type),
  );
}

export function findCondition(list: Condition[] | undefined, type: string): Condition | undefined {
  return list?.find((c) => c.type === type);
}
