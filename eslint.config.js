import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// The boundaries between the halves (test/unit/import-boundaries.test.ts checks that they bite):
// the operator uses the relay only through its contract (relay/src/contract, what the operator image
// copies), the relay never uses the operator, and product code never uses test code, the k8s testbed
// included. The testbed (test/k8s) is a workspace package, @cartero/k8s-testbed: everything else in the
// repository imports it by that name, never by a relative path into its folder (which would skip its build
// and its exports map); it imports nothing of the repository's (its tsconfig's rootDir and
// test/k8s/package.test.ts check that).
const NO_TEST = {
  regex: '(^|/)test(/|$)',
  message: 'product code must not import test code (test/).',
};
const OPERATOR_ONLY_CONTRACT = {
  // The relay half is reached by climbing out of operator/src (two or more `../`) or through relay/src;
  // the operator's own folder operator/src/relay (the SmtpRelay kind) is `./relay/` or `../relay/`.
  regex: '^(?!(\\.\\./)+relay/src/contract/[\\w-]+\\.js$)((\\.\\./){2,}relay(/|$)|.*(^|/)relay/src(/|$))',
  message:
    'the operator may import from the relay only its contract, relay/src/contract (import index.js); move what it needs there.',
};
const NO_TESTBED = {
  regex: '^@cartero/k8s-testbed(/|$)',
  message: 'product code must not import the k8s testbed (@cartero/k8s-testbed, test/k8s).',
};
const TESTBED_BY_NAME = {
  // any relative specifier with a `k8s` folder in it: ../k8s/..., ../test/k8s/..., ./k8s/...
  regex: '^\\.\\.?/(.*/)?k8s(/|$)',
  message:
    'import the k8s testbed by its package name (@cartero/k8s-testbed/apiserver/server.js), not by a path into test/k8s.',
};
const RELAY_NOT_OPERATOR = {
  regex: '(^|/)operator(/|$)',
  message: 'the relay must not import the operator.',
};

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'test/k8s/dist/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['operator/src/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [OPERATOR_ONLY_CONTRACT, NO_TEST, NO_TESTBED] }],
    },
  },
  {
    files: ['relay/src/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [RELAY_NOT_OPERATOR, NO_TEST, NO_TESTBED] }] },
  },
  {
    files: ['test/**/*.ts', 'scripts/**/*.ts', 'bench/**/*.ts'],
    ignores: ['test/k8s/**'],
    rules: { 'no-restricted-imports': ['error', { patterns: [TESTBED_BY_NAME] }] },
  },
);
