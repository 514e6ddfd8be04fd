// Type-aware lint (CONVENTIONS 11): floating promises, misused promises, import cycles, and
// the Kubernetes client kept inside src/runtime/kubernetes/.
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';

export default tseslint.config(
  { ignores: ['dist/**', 'dist-*/**', 'node_modules/**', 'fixtures/**', '.ferry/**', 'bin/**', 'bench/results/**', 'ui/dist/**'] },
  {
    files: ['**/*.ts', '**/*.tsx'],
    extends: [tseslint.configs.recommendedTypeChecked],
    plugins: { 'import-x': importX },
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': ['error', {
        allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'describe', 'it', 'suite', 'before', 'after', 'beforeEach', 'afterEach'] }],
      }],
      // Interfaces are async for implementations that need it (Postgres, S3); sync ones are fine.
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'import-x/no-cycle': ['error', { maxDepth: 10 }],
      'no-restricted-imports': ['error', {
        paths: [{ name: '@kubernetes/client-node', message: 'Only src/runtime/kubernetes/ may import the Kubernetes client.' }],
      }],
    },
  },
  {
    // import-x cannot resolve the ESM-only vite plugin packages (it crashes); a build config
    // imports nothing of ours, so it cannot be part of a cycle.
    files: ['ui/vite.config.ts'],
    rules: { 'import-x/no-cycle': 'off' },
  },
  {
    // The REST shapes are imported by the browser console: nothing from Node or the rest of src/.
    files: ['src/api/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        patterns: [{ regex: '^(?!\./)', message: 'src/api is Node-free and stands alone: import only its own files (./x.js).' }],
      }],
    },
  },
  {
    // Tests of the Kubernetes code drive the contract double with the real client.
    files: ['src/runtime/kubernetes/**/*.ts', 'test/kube-*.ts', 'test/runtime-kubernetes*.ts'],
    rules: { 'no-restricted-imports': 'off' },
  },
  {
    files: ['test/**/*.ts', 'bench/**/*.ts', 'scripts/**/*.ts'],
    rules: {
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
    },
  },
);
