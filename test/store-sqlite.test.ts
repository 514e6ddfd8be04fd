import fsp from 'node:fs/promises';
import path from 'node:path';
import { openStore } from '../src/store/index.js';
import { storeContract } from './contract/store.js';
import { tempDir } from './support/index.js';

storeContract('sqlite', async () => {
  const dir = await tempDir();
  return {
    open: () => openStore({ kind: 'sqlite', path: path.join(dir, 'ferry.db') }),
    cleanup: () => fsp.rm(dir, { recursive: true, force: true }),
  };
});
