/**
 * Staging models for the local runtime: a replica process's private model directory filled from
 * the entity's artifact directory (`stageModel`), and a family replica's members sent over its
 * control channel on request (`stageMember`).
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { FerryError, toFerryError } from '../../errors.js';
import type { StageRequest } from '../../replica/index.js';
import type { ReplicaSpec } from '../types.js';
import type { ReplicaLink } from './control.js';

/**
 * Answers a family replica's `StageRequest`: the server finds the member (`family.stage`, which
 * refuses models outside the family and artifacts over the replica's cache budget, unread) and
 * its model file's bytes go back as the payload of a control frame, so the replica needs no file
 * access. Failures are answered with the error.
 */
export async function stageMember(link: ReplicaLink, family: NonNullable<ReplicaSpec['family']>, m: StageRequest): Promise<void> {
  try {
    const { modelFile, bytes } = await family.stage(m.name, m.version);
    link.sendStaged({ id: m.id, modelFile, bytes });
  } catch (err) {
    link.sendStaged({ id: m.id, error: toFerryError(err).toBody() });
  }
}

/**
 * Fills `modelDir` (a replica process's private directory) with `spec.artifactDir`'s tree: hard
 * links, so staging a model of any size costs one link per file, or copies where links are refused
 * (another file system: EXDEV; protected_hardlinks or a file system without links: EPERM). Only
 * directories and regular files are staged: a symbolic link could point the replica at files it
 * must not read, so one is refused. Rejects with MODEL_ERROR.
 */
export async function stageModel(spec: ReplicaSpec, modelDir: string, dirMode: number): Promise<void> {
  const mkdir = async (dir: string): Promise<void> => {
    await fsp.mkdir(dir, { recursive: true, mode: dirMode });
    await fsp.chmod(dir, dirMode); // not masked by umask
  };
  if (spec.family !== undefined) {
    // A family replica starts with no model; its members arrive over the control channel (`stageMember`).
    await mkdir(modelDir);
    return;
  }
  const stage = async (from: string, to: string): Promise<void> => {
    await mkdir(to);
    for (const entry of await fsp.readdir(from, { withFileTypes: true })) {
      const src = path.join(from, entry.name);
      const dest = path.join(to, entry.name);
      if (entry.isDirectory()) {
        await stage(src, dest);
      } else if (entry.isFile()) {
        await fsp.link(src, dest).catch(async (err: NodeJS.ErrnoException) => {
          if (err.code !== 'EXDEV' && err.code !== 'EPERM') throw err;
          await fsp.copyFile(src, dest);
        });
        // A replica that runs as the replica user from its start must read its files. A hard link
        // shares the stored artifact's inode, so this makes the stored file 0644 too: it stays
        // out of other users' reach behind the 0700 data directory, and a replica sees only its
        // own model directory (the sandbox binds nothing else).
        if (dirMode !== 0o700) await fsp.chmod(dest, 0o644);
      } else {
        throw new Error(`'${path.relative(spec.artifactDir, src)}' is not a regular file or directory`);
      }
    }
  };
  try {
    await stage(spec.artifactDir, modelDir);
  } catch (err) {
    throw new FerryError('MODEL_ERROR', `Could not stage the model of replica '${spec.id}' from '${spec.artifactDir}': ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}
