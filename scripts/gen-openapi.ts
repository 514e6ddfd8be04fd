/**
 * Writes docs/openapi.json, the whole REST API from the server's route table:
 * `node dist/scripts/gen-openapi.js [file]`. Starts a throwaway server (port 0, a temp data
 * directory) to read its routes, then stops it.
 */
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { compileServerConfig } from '../src/config/index.js';
import { apiDocument } from '../src/server/openapi.js';
import { startServer } from '../src/server/index.js';
import { FERRY_VERSION } from '../src/version.js';

const out = path.resolve(process.argv[2] ?? 'docs/openapi.json');
const dataDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'ferry-openapi-'));
const server = await startServer(compileServerConfig({ port: 0, dataDir, warmPoolSize: 0 }), { adminToken: 'ferry_openapi_generation_token' });
try {
  await fsp.writeFile(out, `${JSON.stringify(apiDocument(server.router.list(), FERRY_VERSION), null, 2)}\n`);
  console.log(`wrote ${out}`);
} finally {
  await server.close();
  await fsp.rm(dataDir, { recursive: true, force: true });
}
