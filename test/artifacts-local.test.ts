import fsp from 'node:fs/promises';
import { openArtifactStore } from '../src/artifacts/index.js';
import { artifactContract } from './contract/artifacts.js';
import { tempDir } from './support/index.js';

artifactContract('local', async () => {
  const dir = await tempDir();
  return { store: await openArtifactStore({ kind: 'local', root: dir }), cleanup: () => fsp.rm(dir, { recursive: true, force: true }) };
});
