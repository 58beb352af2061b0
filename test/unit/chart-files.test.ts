/**
 * The chart's files that must agree with the rest of the repository: its CRDs are copies of crds/ (Helm
 * installs crds/ from the chart only), and values.yaml and values.schema.json name the same fields.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const CHART = path.join(ROOT, 'charts', 'cartero');

interface Schema {
  type?: string | string[];
  properties?: Record<string, Schema>;
  additionalProperties?: boolean | Schema;
}

describe('chart files', () => {
  it('charts/cartero/crds/ holds exactly the CRDs of crds/', async () => {
    const want = (await readdir(path.join(ROOT, 'crds'))).filter((f) => f.endsWith('.yaml')).sort();
    const have = (await readdir(path.join(CHART, 'crds'))).sort();
    assert.deepEqual(have, want, 'same files');
    for (const f of want) {
      const a = await readFile(path.join(ROOT, 'crds', f), 'utf8');
      const b = await readFile(path.join(CHART, 'crds', f), 'utf8');
      assert.ok(
        a === b,
        `charts/cartero/crds/${f} differs from crds/${f}: run cp crds/*.yaml charts/cartero/crds/`,
      );
    }
  });

  it('Chart.yaml: apiVersion v2, appVersion = package version', async () => {
    const chart = YAML.parse(await readFile(path.join(CHART, 'Chart.yaml'), 'utf8')) as Record<
      string,
      string
    >;
    const pkg = JSON.parse(await readFile(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
    assert.equal(chart.apiVersion, 'v2');
    assert.equal(chart.appVersion, pkg.version);
  });

  it('every field of values.yaml is in the schema and documented, and the schema has no other fields', async () => {
    const text = await readFile(path.join(CHART, 'values.yaml'), 'utf8');
    const values = YAML.parse(text) as Record<string, unknown>;
    const schema = JSON.parse(await readFile(path.join(CHART, 'values.schema.json'), 'utf8')) as Schema;
    const walk = (v: unknown, s: Schema, at: string, seen: Set<string>) => {
      if (!s.properties) return; // free-form (labels, affinity, securityContext, ...)
      for (const k of Object.keys(s.properties)) if (k !== 'global') seen.add(`${at}/${k}`);
      if (!v || typeof v !== 'object' || Array.isArray(v)) return;
      for (const [k, child] of Object.entries(v)) {
        const cs = s.properties[k];
        assert.ok(cs, `values.yaml ${at}/${k} is not in values.schema.json`);
        walk(child, cs, `${at}/${k}`, seen);
      }
    };
    const seen = new Set<string>();
    walk(values, schema, '', seen);
    const inValues = (p: string) =>
      p
        .split('/')
        .slice(1)
        .reduce<unknown>(
          (o, k) => (o && typeof o === 'object' ? (o as Record<string, unknown>)[k] : undefined),
          values,
        );
    for (const p of seen)
      assert.notEqual(inValues(p), undefined, `schema field ${p} has no default in values.yaml`);
    // each top-level field has a comment right above it (or above its block's first line)
    const lines = text.split('\n');
    for (const k of Object.keys(values)) {
      const i = lines.findIndex((l) => l.startsWith(`${k}:`));
      let j = i - 1;
      while (j >= 0 && /^[a-zA-Z]/.test(lines[j])) j--; // podAnnotations/podLabels share one comment
      const documented = lines[j]?.startsWith('#') || lines[i + 1]?.trimStart().startsWith('#');
      assert.ok(documented, `values.yaml: ${k} has no comment`);
    }
  });
});
