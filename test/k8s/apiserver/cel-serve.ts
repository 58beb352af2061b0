/** Wires cel.ts into the server: CRD rule compilation at CRD writes, rule evaluation at custom resource writes. */
import { ApiError, invalid } from './errors.js';
import type { KObject } from './objects.js';
import { CelValidator, crdRuleErrors } from './cel.js';
import { statusInvalid } from './openapi.js';
import type { Registry } from './resources.js';
import type { AdmitFn, Store } from './store.js';

type Json = Record<string, unknown>;

interface CrdVersion {
  name: string;
  storage?: boolean;
  schema?: { openAPIV3Schema?: Json };
}

/**
 * An admission step (after schema validation, defaulting and pruning, which the request handlers do):
 * a CustomResourceDefinition whose rules do not compile is a 422 naming the rule; a custom resource
 * that fails a rule is a 422 with one cause per failure. CEL applies whatever `fieldValidation` says,
 * and to dry runs too. Compiled rules are kept per CRD uid, resourceVersion and version.
 */
export function celAdmission(registry: Registry, store: Store): AdmitFn {
  const cache = new Map<string, CelValidator>();
  return (t, obj, old) => {
    if (t.group === 'apiextensions.k8s.io' && t.kind === 'CustomResourceDefinition') {
      const causes = crdRuleErrors(obj as Json).map((e) => ({
        reason: e.type,
        message: e.message,
        field: e.field,
      }));
      if (causes.length) throw invalid(t.kind, obj.metadata.name ?? '', causes, t.group);
      return;
    }
    if (!t.crd) return;
    const crdType = registry.find('apiextensions.k8s.io', 'v1', 'customresourcedefinitions');
    if (!crdType) return;
    let crd: KObject;
    try {
      crd = store.get(crdType, '', t.crd);
    } catch {
      return;
    }
    const versions = ((crd.spec as { versions?: CrdVersion[] } | undefined)?.versions ?? []).filter(
      (v) => typeof v?.name === 'string',
    );
    const asked = typeof obj.apiVersion === 'string' ? obj.apiVersion.split('/').pop() : undefined;
    const version = versions.find((v) => v.name === asked) ?? versions.find((v) => v.storage) ?? versions[0];
    const schema = version?.schema?.openAPIV3Schema;
    if (!version || !schema) return;
    const key = `${crd.metadata.uid ?? ''}/${crd.metadata.resourceVersion ?? ''}/${version.name}`;
    let validator = cache.get(key);
    if (!validator) {
      try {
        validator = CelValidator.compile(schema).validator;
      } catch {
        return; // refused at the CRD write already (crdRuleErrors); nothing to evaluate
      }
      cache.set(key, validator);
    }
    const { errors } = validator.validate(obj as Json, old as Json | undefined);
    if (errors.length === 0) return;
    const kind = {
      group: t.group,
      version: version.name,
      kind: t.kind,
      plural: t.plural,
      namespaced: t.namespaced,
    };
    const st = statusInvalid(kind, obj.metadata.name ?? '', errors) as {
      message: string;
      details: ConstructorParameters<typeof ApiError>[3];
    };
    throw new ApiError(422, 'Invalid', st.message, st.details);
  };
}
