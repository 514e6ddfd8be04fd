/**
 * What a Python interpreter reads, for the sandbox of a python replica (./sandbox.ts) and of a
 * fork server (./python-pool.ts): asked of each interpreter once.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** How long the Python interpreter may take to list its paths (`PythonPaths.of`); an import-free start takes ~20 ms. */
const PYTHON_PROBE_TIMEOUT_MS = 10_000;
const DEBIAN_ALTERNATIVES = '/etc/alternatives';
/** Bound into every sandbox already (./sandbox.ts): a Python path under them needs no bind of its own. */
const SYSTEM_DIRS = ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32'];

function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

export class PythonPaths {
  /** Each Python interpreter's paths, asked once. */
  private readonly known = new Map<string, Promise<readonly string[]>>();

  /**
   * What the Python interpreter `python` reads besides the system directories: its prefixes and
   * every `sys.path` entry (a virtualenv, a `.pth` file's directories), asked of the interpreter
   * once, bound read-only into the sandbox of a python replica. An interpreter that does not run
   * gives none: the replica's own start then fails with the interpreter's error.
   */
  of(python: string): Promise<readonly string[]> {
    const known = this.known.get(python);
    if (known !== undefined) return known;
    const paths = new Promise<readonly string[]>((resolve) => {
      const script = 'import json, sys; print(json.dumps([sys.executable, sys.prefix, sys.exec_prefix, sys.base_prefix, *sys.path]))';
      execFile(python, ['-I', '-c', script], { timeout: PYTHON_PROBE_TIMEOUT_MS, env: { PATH: '/usr/bin:/bin' } }, (err, stdout) => {
        let paths: unknown;
        try {
          paths = err === null ? JSON.parse(stdout) : [];
        } catch {
          paths = [];
        }
        // Directories outside the system ones the sandbox binds anyway (a venv's bin/python is a
        // link into /usr/bin, which must not be recreated over the bound /usr).
        const list = Array.isArray(paths)
          ? paths.filter((p): p is string => typeof p === 'string' && path.isAbsolute(p) && isDirectory(p) && !SYSTEM_DIRS.some((d) => p === d || p.startsWith(`${d}/`)))
          : [];
        // Debian's BLAS and LAPACK (numpy's libblas.so.3) are symbolic links through /etc/alternatives.
        const alternatives = fs.existsSync(DEBIAN_ALTERNATIVES) ? [DEBIAN_ALTERNATIVES] : [];
        resolve([...new Set([...list, ...alternatives])]);
      });
    });
    this.known.set(python, paths);
    return paths;
  }
}
