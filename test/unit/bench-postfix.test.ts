/**
 * The benchmark runs from a clone: the reference Postfix configuration it starts is carried in bench/,
 * and neither the benchmark's code nor its documentation names a file outside the repository.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { POSTFIX_REFERENCE_DIR, PostfixRelay } from '../../bench/systems.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

test('the reference Postfix configuration the benchmark starts is in bench/postfix/', () => {
  assert.equal(POSTFIX_REFERENCE_DIR, path.join(ROOT, 'bench', 'postfix'));
  const mainCf = readFileSync(path.join(POSTFIX_REFERENCE_DIR, 'main.cf.in'), 'utf8');
  const masterCf = readFileSync(path.join(POSTFIX_REFERENCE_DIR, 'master.cf'), 'utf8');
  // a template for the scratch dir, with the ports PostfixRelay assumes
  assert.match(mainCf, /^config_directory = @BASE@\/postfix\/etc$/m);
  assert.match(mainCf, /^relayhost = \[127\.0\.0\.1\]:2626$/m);
  assert.match(masterCf, /^127\.0\.0\.1:2525 +inet /m);
  assert.equal(new PostfixRelay('/scratch').fixedSinkPort, 2626);
});

/** Absolute paths a clone has too: the kernel's, and URL paths of the relay's admin API. */
const ALLOWED = /^\/(proc|metrics|queue|tenants)(\/|$)/;

test('the benchmark and docs/benchmarks.md name no path outside the repository', () => {
  const bad: string[] = [];
  const docs = readFileSync(path.join(ROOT, 'docs', 'benchmarks.md'), 'utf8');
  // `…` spans and link targets in the docs
  for (const [, code] of docs.matchAll(/`([^`\n]+)`/g))
    for (const [p] of code.matchAll(/(?<![\w.:/<>-])\/[\w.@-]+(?:\/[\w.@-]*)*/g))
      if (!ALLOWED.test(p)) bad.push(`docs/benchmarks.md: ${p}`);
  for (const [, target] of docs.matchAll(/\]\(([^)\s]+)\)/g)) {
    if (/^[a-z]+:/.test(target) || target.startsWith('#')) continue;
    const abs = path.resolve(ROOT, 'docs', target.replace(/#.*$/, ''));
    if (!abs.startsWith(ROOT + path.sep) || !existsSync(abs)) bad.push(`docs/benchmarks.md: link ${target}`);
  }
  // string literals in the benchmark's sources
  const dir = path.join(ROOT, 'bench');
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.ts'))) {
    const src = readFileSync(path.join(dir, f), 'utf8');
    for (const [, , p] of src.matchAll(/(['"`])(\/[\w.@-]+(?:\/[^'"`\s]*)?)\1/g))
      if (!ALLOWED.test(p)) bad.push(`bench/${f}: ${p}`);
  }
  assert.deepEqual(bad, []);
});
