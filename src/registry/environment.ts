/**
 * A model version's Python environment as its artifact declares it (Ferry's
 * `GET /api/2.0/mlflow/model-versions/get-environment`, shown by the console's model page): the
 * text of `python_env.yaml` and `requirements.txt`, and whether a `conda.yaml` is there (Ferry
 * does not support conda environments). Example answer for an `mlflow.sklearn` directory:
 * `{"python_env": "python: 3.11.2\n...", "requirements": "mlflow==2.12.1\nscikit-learn==1.2.1\n", "conda": true}`.
 * Files are read from the artifact store on request; each is shown up to `MAX_FILE_BYTES`.
 */
import type { VersionEnvironment } from '../api/index.js';
import type { ArtifactStore } from '../artifacts/index.js';
import type { ModelVersionRecord } from '../store/index.js';

/** Larger environment files are cut there (with a note): requirement lists are a few hundred bytes. */
export const MAX_FILE_BYTES = 64 * 1024;


export async function versionEnvironment(artifacts: ArtifactStore, v: ModelVersionRecord): Promise<VersionEnvironment> {
  const dir = v.artifact?.path;
  if (dir === undefined) return { conda: false };
  const read = async (file: string): Promise<string | undefined> => {
    const key = `${dir}/${file}`;
    if (!(await artifacts.exists(key))) return undefined;
    const { stream, sizeBytes } = await artifacts.getFile(key);
    const chunks: Buffer[] = [];
    let got = 0;
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      got += chunk.length;
      if (got >= MAX_FILE_BYTES) break;
    }
    stream.destroy();
    const text = Buffer.concat(chunks).subarray(0, MAX_FILE_BYTES).toString('utf8');
    return sizeBytes > MAX_FILE_BYTES ? `${text}\n… (${file} is ${sizeBytes} bytes; the first ${MAX_FILE_BYTES} are shown)` : text;
  };
  const [pythonEnv, requirements, conda] = await Promise.all([read('python_env.yaml'), read('requirements.txt'), artifacts.exists(`${dir}/conda.yaml`)]);
  return { ...(pythonEnv === undefined ? {} : { python_env: pythonEnv }), ...(requirements === undefined ? {} : { requirements }), conda };
}
