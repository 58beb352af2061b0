import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { renderCrdTypes, TYPES_FILE, loadCrd, CRDS } from '../../scripts/crd-types.js';

test('operator/src/api/types.ts matches crds/*.yaml (run `npm run gen:types` after changing a CRD)', async () => {
  const want = await renderCrdTypes();
  const have = readFileSync(TYPES_FILE, 'utf8');
  assert.equal(have, want, 'the generated types are stale: run `npm run gen:types`');
});

test('every CRD field has a description and a type (structural schema)', () => {
  for (const { file } of CRDS) {
    const crd = loadCrd(file);
    const missing: string[] = [];
    const walk = (s: Record<string, unknown>, at: string, inList = false): void => {
      if (at !== '' && at !== '.metadata' && !inList && typeof s.description !== 'string')
        missing.push(`${at}: description`);
      if (!s.type && !s['x-kubernetes-int-or-string'] && !s.anyOf) missing.push(`${at}: type`);
      if (JSON.stringify(s).includes('$ref')) missing.push(`${at}: $ref is not allowed in a CRD`);
      for (const [n, v] of Object.entries((s.properties ?? {}) as Record<string, Record<string, unknown>>)) {
        if (at === '' && (n === 'apiVersion' || n === 'kind' || n === 'metadata')) continue;
        walk(v, `${at}.${n}`);
      }
      if (s.items) walk(s.items as Record<string, unknown>, `${at}[]`, true);
    };
    walk(crd.spec.versions[0].schema.openAPIV3Schema, '');
    assert.deepEqual(missing, [], `${file}: fields without a description or type`);
  }
});
