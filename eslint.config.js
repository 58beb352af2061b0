import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// The boundaries between the halves (test/unit/import-boundaries.test.ts checks that they bite):
// the operator uses the relay only through its contract (relay/src/contract, what the operator image
// copies), the relay never uses the operator, and product code never uses test code.
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
const RELAY_NOT_OPERATOR = {
  regex: '(^|/)operator(/|$)',
  message: 'the relay must not import the operator.',
};

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['operator/src/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [OPERATOR_ONLY_CONTRACT, NO_TEST] }] },
  },
  {
    files: ['relay/src/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [RELAY_NOT_OPERATOR, NO_TEST] }] },
  },
);
