// Type-aware lint: floating promises, misused promises, import cycles, folder boundaries (see
// "Folders and their entries" in docs/architecture.md), and the Kubernetes client kept inside
// src/runtime/kubernetes/.
import tseslint from 'typescript-eslint';
import importX from 'eslint-plugin-import-x';

/**
 * Besides its index.ts, the modules of a folder under src/ that other folders may import: leaf
 * modules that load nothing heavy, kept apart so that importing a name or a type does not load a
 * plane (a replica imports these, never the control plane's barrels). Paths relative to src/.
 */
const PUBLIC_MODULES = [
  'config/defaults', // server defaults shared with the replica and the HTTP layer
  'flavors/names', 'flavors/types', 'flavors/inspection', // names and types without a flavor; the inspector's entry
  'flavors/llm/index', 'flavors/onnx/model-proto', 'flavors/onnx/zipmap', // what the replica and the compact evaluators use of one flavor
  'multi/replica', 'multi/xgboost', // the replica side of model families; the XGBoost parser
  'gateway/route-mirror', 'gateway/worker-gateway', 'gateway/worker-protocol', // gateway workers: the primary's side, a worker's entry, their messages
  'protocols/openai', // the OpenAI request codecs (the replica and the gateway)
  'replica/options', // the replica options schema (runtimes, CLI)
  'telemetry/replica', // a replica's own model metrics
];
const allowed = PUBLIC_MODULES.join('|');
/** An import that climbs `depth` folders and enters another folder at a file that is not its entry. */
const intoInternals = (depth) => ({
  regex: `^(\\.\\./){${depth}}(?!(${allowed})\\.js$)[a-z-]+/(?!index\\.js$).+`,
  message: 'Import another folder through its index.ts (or a module in PUBLIC_MODULES of eslint.config.js), not its internals.',
});
/** A file importing its own folder's index.ts (or its parent's) makes a cycle: the index imports the file. */
const ownIndex = { regex: '^(\\./|\\.\\./)index\\.js$', message: 'Import the sibling module itself, not the folder\'s index.ts (which imports this file): a cycle.' };
const kubernetesClient = { name: '@kubernetes/client-node', message: 'Only src/runtime/kubernetes/ may import the Kubernetes client.' };

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
      'no-restricted-imports': ['error', { paths: [kubernetesClient] }],
    },
  },
  {
    files: ['src/*/*.ts'],
    rules: { 'no-restricted-imports': ['error', { paths: [kubernetesClient], patterns: [intoInternals(1), ownIndex] }] },
  },
  {
    files: ['src/*/*/*.ts'],
    ignores: ['src/runtime/kubernetes/**'],
    rules: { 'no-restricted-imports': ['error', { paths: [kubernetesClient], patterns: [intoInternals(2), ownIndex] }] },
  },
  {
    files: ['src/runtime/kubernetes/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [intoInternals(2), ownIndex] }] },
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
    files: ['test/kube-*.ts', 'test/runtime-kubernetes*.ts'],
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
