/** The settings of the local runtime (./index.ts), given to `LocalRuntime.open`. */
import type { LogLevel } from '../../logs/index.js';
import type { SandboxSetting } from './sandbox.js';
import type { GpuSettings } from './gpu.js';

export interface LocalRuntimeOptions {
  /** Directory for sockets, logs and pid files, e.g. `<data-dir>/runtime`; created if missing. */
  stateDir: string;
  /** How long a replica may take from spawn to answering `GET /v2/health/ready` with 200. */
  startTimeoutMs: number;
  /** How long a stopping replica may drain in-flight requests before it is killed. */
  drainTimeoutMs: number;
  /** How often each replica's resident memory is compared with its limit; default 1000. */
  memoryPollMs?: number;
  /**
   * Idle pre-started replica processes kept ready to be claimed by any served entity; default 1,
   * 0 disables the pool. Each costs one idle Node process with onnxruntime loaded (~100 MiB
   * resident here, measured in test/runtime-local.test.ts) and saves a claimed replica most of
   * its cold start.
   */
  warmPoolSize?: number;
  /**
   * The memory limit pool processes are started for (their V8 heap limit is half of it, fixed at
   * process start): only a spec with a limit giving the same heap size claims one. Default 2 GiB,
   * the server's default `replicaMemoryLimit`; the server passes its configured limit.
   */
  warmPoolMemoryLimitBytes?: number;
  /**
   * The user replicas drop to after loading their model when the server runs as root: a name from
   * /etc/passwd or "uid:gid" (the server passes its `replicaUser`, default "nobody"). Resolved at
   * `open`. Ignored when the server is not root (a replica cannot change its uid then); undefined:
   * replicas keep the server's uid.
   */
  replicaUser?: string;
  /** The level replicas log at (the server passes its `logLevel`); default info. */
  logLevel?: LogLevel;
  /**
   * The OS sandbox around every replica process (./sandbox.ts): `auto` (default) uses bubblewrap
   * when it works here, `bwrap` requires it (`open` rejects otherwise), `none` never uses it.
   */
  sandbox?: SandboxSetting;
  /**
   * Whether replicas that run user code (js and python models) may start without a sandbox; default
   * false: they are refused, naming this setting. Without a sandbox such code runs as the server's
   * user until the drop (root when the server is root) with only Node's permission model around it.
   */
  allowUnsandboxedUserCode?: boolean;
  /**
   * The Python interpreter python-flavor models run in (the server's `python` setting): a path, or
   * a command name looked up on the server's PATH at `open` (default `python3`).
   */
  python?: string;
  /**
   * How a python model's environment is made (the server's `pythonEnvManager`): `local` runs it in
   * `python` as it is; `virtualenv` builds a venv per distinct requirements (./python-env.ts).
   */
  pythonEnvManager?: 'local' | 'virtualenv';
  /** Extra `pip install` arguments for `virtualenv` builds (the server's `pythonPipArgs`). */
  pythonPipArgs?: string[];
  /**
   * Idle Python fork servers kept per interpreter (./python-pool.ts); default 1, 0 disables them
   * (each python replica then starts its own worker). Each costs one idle interpreter with the
   * `pythonPreload` modules imported (~120 MiB resident for numpy, pandas and scikit-learn).
   */
  pythonWarmPoolSize?: number;
  /** The modules a fork server imports before it forks workers; default numpy, pandas, scikit-learn, cloudpickle. */
  pythonPreload?: string[];
  /**
   * Most processes (threads included) in one sandbox: a replica, or a Python fork server with all
   * of its model's workers (./pids-limit.ts); default 512, 0 for no limit. A sandbox that hits it
   * is killed. Needs a writable pids cgroup (`processLimit` says whether there is one).
   */
  maxProcessesPerSandbox?: number;
  /**
   * GPUs for `GPU_*` replicas (./gpu.ts; the server's `gpus`, `gpuFallback`, `gpuLibraries`):
   * default discovered, a GPU replica refused when there is none, driver libraries from ldconfig.
   */
  gpu?: Partial<GpuSettings>;
}
