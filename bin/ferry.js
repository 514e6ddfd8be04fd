#!/usr/bin/env node
// Entry point for the `ferry` command; the CLI itself is compiled TypeScript in dist/.
import('../dist/src/cli/main.js').then((m) => m.main(process.argv.slice(2))).catch((err) => {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND') {
    process.stderr.write('ferry is not built yet: run `npm ci` (or `npm run build`) in the repository first.\n');
    process.exit(1);
  }
  throw err;
});
