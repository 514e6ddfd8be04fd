/**
 * Python environments for python-flavor models (MLflow's `env_manager: virtualenv`): one virtualenv
 * per distinct environment, keyed by a hash of the model's `python_env.yaml` and
 * `requirements.txt`, built once by pip before the first replica that needs it and reused by every
 * version and replica with the same requirements. Example: two versions of a model whose
 * requirements.txt both read "scikit-learn==1.2.1\ncloudpickle==2.2.0" share one venv.
 *
 * A venv is built in a temporary directory and renamed into place only when pip succeeded, so a
 * crash mid-build leaves nothing that looks ready. Concurrent starts of one environment wait for
 * one build. The build's output is kept next to it (`<hash>.log`); a failed build is retried by the
 * next start (its log is replaced). Private to `src/runtime/local/`.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { FerryError } from '../../errors.js';

/** How long one environment's build (venv creation + pip install) may take. */
const BUILD_TIMEOUT_MS = 15 * 60_000;
const ENV_FILES = ['python_env.yaml', 'requirements.txt'] as const;

export interface PythonEnvironmentOptions {
  /** Where environments live (the runtime's state directory): `<hash>/` and `<hash>.log`. */
  dir: string;
  /** The interpreter venvs are made from (the server's `python`). */
  basePython: string;
  /**
   * Extra `pip install` arguments, e.g. `["--index-url", "https://pypi.example.com/simple"]`, or
   * `["--no-index", "--find-links", "/wheels"]` where there is no network.
   */
  pipArgs: readonly string[];
  /** Venvs see the base interpreter's packages (`--system-site-packages`). */
  systemSitePackages: boolean;
}

export class PythonEnvironments {
  private readonly builds = new Map<string, Promise<string>>();
  /** `basePython`'s version ("3.11.2"), asked once. */
  private baseVersion: Promise<string> | undefined;

  constructor(private readonly options: PythonEnvironmentOptions) {}

  /** The environment's key for a model directory: sha256 of its env files and the build settings. */
  async keyOf(modelDir: string): Promise<string> {
    const hash = createHash('sha256');
    hash.update(JSON.stringify([this.options.basePython, this.options.pipArgs, this.options.systemSitePackages]));
    for (const name of ENV_FILES) {
      hash.update(`\0${name}\0`);
      hash.update(await fsp.readFile(path.join(modelDir, name)).catch(() => Buffer.alloc(0)));
    }
    return hash.digest('hex').slice(0, 32);
  }

  /** Where the build log of environment `key` is. */
  logFile(key: string): string {
    return path.join(this.options.dir, `${key}.log`);
  }

  /**
   * The interpreter of `modelDir`'s environment, built first when it does not exist yet.
   * @throws FerryError MODEL_ERROR naming pip's error when the build fails.
   */
  async python(modelDir: string): Promise<string> {
    const key = await this.keyOf(modelDir);
    const final = path.join(this.options.dir, key);
    const python = path.join(final, 'bin', 'python');
    if (fs.existsSync(python)) return python;
    let build = this.builds.get(key);
    if (build === undefined) {
      build = this.build(key, modelDir, final).finally(() => this.builds.delete(key));
      this.builds.set(key, build);
    }
    await build;
    return python;
  }

  private async build(key: string, modelDir: string, final: string): Promise<string> {
    await fsp.mkdir(this.options.dir, { recursive: true, mode: 0o755 });
    const log = this.logFile(key);
    await fsp.writeFile(log, `environment ${key} for ${modelDir}\n`);
    await this.checkVersion(modelDir, log);
    const tmp = await fsp.mkdtemp(path.join(this.options.dir, `.${key}-`));
    try {
      await run(this.options.basePython, ['-m', 'venv', ...(this.options.systemSitePackages ? ['--system-site-packages'] : []), tmp], log);
      const requirements = path.join(modelDir, 'requirements.txt');
      if (fs.existsSync(requirements)) {
        await run(path.join(tmp, 'bin', 'python'), [
          '-m', 'pip', 'install', '--disable-pip-version-check', '--no-input', '--no-cache-dir', ...this.options.pipArgs, '-r', requirements,
        ], log);
      }
      // A venv's interpreter finds its prefix from its own location, so the rename keeps it whole.
      await fsp.chmod(tmp, 0o755);
      await fsp.rename(tmp, final);
      await fsp.appendFile(log, 'environment ready\n');
      return final;
    } catch (err) {
      await fsp.rm(tmp, { recursive: true, force: true });
      const text = await fsp.readFile(log, 'utf8').catch(() => '');
      const pipError = text.split('\n').filter((l) => l.startsWith('ERROR:')).at(-1) ?? (err as Error).message;
      await fsp.appendFile(log, `environment build failed: ${pipError}\n`);
      throw new FerryError('MODEL_ERROR', `Building the model's Python environment failed: ${pipError}`);
    }
  }

  /**
   * The policy for `python_env.yaml`'s `python:` (e.g. "3.8.10"): a venv is made from `basePython`,
   * so its major.minor must be the model's; the patch level may differ (as MLflow's own pip
   * environments allow). A mismatch fails the build, naming both, and is written to the build log.
   * Without a `python:` line, any version serves. (`env_manager: local` runs the model in `python`
   * as it is, as MLflow's local manager does: no check.)
   */
  private async checkVersion(modelDir: string, log: string): Promise<void> {
    const text = await fsp.readFile(path.join(modelDir, 'python_env.yaml'), 'utf8').catch(() => '');
    const line = /^python:[ \t]*(.*?)[ \t]*$/m.exec(text);
    if (line === null) return;
    const wanted = (line[1] ?? '').replace(/^(["'])(.*)\1$/, '$2');
    const fail = async (message: string): Promise<never> => {
      await fsp.appendFile(log, `environment build failed: ${message}\n`);
      throw new FerryError('MODEL_ERROR', `Building the model's Python environment failed: ${message}`);
    };
    const want = /^(\d+)\.(\d+)(\.\d+)?$/.exec(wanted);
    if (want === null) return fail(`python_env.yaml's python "${wanted}" is not a version such as 3.11 or 3.11.2.`);
    const have = await this.version();
    if (have.split('.').slice(0, 2).join('.') !== `${want[1]}.${want[2]}`) {
      return fail(`python_env.yaml asks for Python ${wanted} but the server's python (${this.options.basePython}) is Python ${have}: a virtualenv needs the same major.minor version. `
        + `Set the server's python setting to a Python ${want[1]}.${want[2]} interpreter.`);
    }
    await fsp.appendFile(log, `python_env.yaml asks for Python ${wanted}; ${this.options.basePython} is Python ${have}\n`);
  }

  /** `basePython`'s version, e.g. "3.11.2" (asked once). */
  private version(): Promise<string> {
    this.baseVersion ??= new Promise((resolve, reject) => {
      execFile(this.options.basePython, ['-I', '-c', 'import sys; print("%d.%d.%d" % sys.version_info[:3])'], { timeout: 10_000 }, (err, stdout) => {
        if (err === null) resolve(stdout.trim());
        else reject(new FerryError('MODEL_ERROR', `The server's python (${this.options.basePython}) does not run: ${err.message}`));
      });
    });
    return this.baseVersion;
  }
}

/** Runs `file args`, its output appended to `log`; rejects when it fails. */
function run(file: string, args: string[], log: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { timeout: BUILD_TIMEOUT_MS, maxBuffer: 64 << 20, env: { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/nonexistent', LANG: 'C.UTF-8' } }, (err, stdout, stderr) => {
        fs.appendFileSync(log, `$ ${[file, ...args].join(' ')}\n${stdout}${stderr}`);
        if (err === null) resolve();
        else reject(new Error(err.message));
      });
    child.stdin?.end();
  });
}
