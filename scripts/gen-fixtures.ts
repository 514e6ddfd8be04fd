/** Writes the fixture models: `node dist/scripts/gen-fixtures.js [dir]` (default ./fixtures). */
import { resolve } from 'node:path';
import { writeFixtures } from '../src/fixtures/index.js';

const paths = await writeFixtures(resolve(process.argv[2] ?? 'fixtures'));
for (const [name, path] of Object.entries(paths)) console.log(`${name}: ${path}`);
