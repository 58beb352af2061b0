/** rbac.authorization.k8s.io/v1: served (no schema, no columns of their own); names are path segments. */
import type { KindDescriptor } from './descriptor.js';

const rbac = (kind: string, namespaced: boolean): KindDescriptor => ({
  group: 'rbac.authorization.k8s.io',
  version: 'v1',
  kind,
  resource: { namespaced },
  strategy: { names: 'path-segment' },
});

export const role = rbac('Role', true);
export const roleBinding = rbac('RoleBinding', true);
export const clusterRole = rbac('ClusterRole', false);
export const clusterRoleBinding = rbac('ClusterRoleBinding', false);
