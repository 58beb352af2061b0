/** Test fixtures of the relay's admin API as the operator reads it. */
import type { TenantState } from '../../relay/src/contract/admin-api.js';

/** A tenant as GET /tenants reports it: active, nothing sent, unless `x` says otherwise. */
export const tenantState = (name: string, x: Partial<TenantState> = {}): TenantState => ({
  name,
  state: 'active',
  rate: 0,
  attempted: 0,
  hard: 0,
  ...x,
});
