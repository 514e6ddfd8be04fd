#!/usr/bin/env node
// Entry point for the `ferry` command; the CLI itself is compiled TypeScript in dist/.
// `ferry replica` has an entry of its own, so that a replica process loads no other command's code.
const [cmd, ...rest] = process.argv.slice(2);
const run = cmd === 'replica'
  ? import('../dist/src/cli/replica.js').then((m) => m.main(rest))
  : import('../dist/src/cli/main.js').then((m) => m.main(process.argv.slice(2)));
run.catch((err) => {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND') {
    process.stderr.write('ferry is not built yet: run `npm ci` (or `npm run build`) in the repository first.\n');
    process.exit(1);
  }
  throw err;
});
