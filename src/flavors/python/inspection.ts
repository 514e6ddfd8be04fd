/**
 * What registration needs of the python flavor: the MLmodel file read and its signature, in pure
 * JS (YAML + ./mlmodel.ts). Nothing here starts Python or imports a module that does, so an
 * inspector process (no child processes, no addons) can use it as is.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { FerryError } from '../../errors.js';
import type { Flavor } from '../types.js';
import { pythonModelInfo } from './mlmodel.js';

export const MLMODEL_FILE = 'MLmodel';

/** Reads and parses `<dir>/MLmodel`. */
export async function readMlmodel(dir: string): Promise<unknown> {
  const text = await fsp.readFile(path.join(dir, MLMODEL_FILE), 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new FerryError('INVALID_PARAMETER_VALUE', `The artifact has no readable MLmodel file (${err.code ?? err.message}).`);
  });
  try {
    return parseYaml(text) as unknown;
  } catch (err) {
    throw new FerryError('INVALID_PARAMETER_VALUE', `The MLmodel file is not valid YAML: ${(err as Error).message}`);
  }
}

/** The python flavor's registration side: name, default model file and `inspect`. */
export const pythonInspection: Pick<Flavor, 'name' | 'defaultModelFile' | 'inspect'> = {
  name: 'python',
  defaultModelFile: MLMODEL_FILE,
  async inspect(dir) {
    return pythonModelInfo(await readMlmodel(dir)).signature;
  },
};
