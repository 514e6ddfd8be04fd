/**
 * GPUs for local replicas: which GPUs this host has, which one a replica of a `GPU_*` workload type
 * gets, and what that replica's process needs to reach it (environment, device nodes and read-only
 * binds for the sandbox). Private to `src/runtime/local/`.
 *
 * - Discovery, once at `open`: `/proc/driver/nvidia/gpus/<bus id>/information` (the driver's own
 *   list: UUID, device minor, PCI bus id), else `nvidia-smi -L` (UUIDs only). The server setting
 *   `gpus` overrides it with a list of UUIDs or indices; with `gpus: "auto"` a server started with
 *   `CUDA_VISIBLE_DEVICES` uses only those.
 * - Placement, per replica (`GpuPool.place`): one GPU per replica, the one with the fewest GPU
 *   replicas on it (ties: the first listed), named to CUDA by its UUID in `CUDA_VISIBLE_DEVICES`. With
 *   more GPU replicas than GPUs (a rollout starts the new replica before the old one drains) GPUs are
 *   shared. CPU replicas get `CUDA_VISIBLE_DEVICES=""`: they never see a GPU, sandboxed or not.
 * - No GPU found: a GPU replica is refused with a message naming the settings (`gpuFallback:
 *   "fail"`, the default), or runs on the CPU, told workload type CPU (`gpuFallback: "cpu"`).
 * - Sandbox: a GPU replica's bubblewrap gets `--dev-bind` of the NVIDIA control nodes
 *   (`nvidiactl`, `nvidia-uvm`, `nvidia-uvm-tools`, `nvidia-modeset`, `nvidia-caps/`) and of its own
 *   GPU's node only (`nvidia<minor>`; every `nvidia<N>` when the minor is unknown), read-only binds
 *   of the driver's sysfs (`/sys/module/nvidia`, `/sys/module/nvidia_uvm`, its GPU's PCI device, the
 *   CPU and NUMA topology: CUDA's initialisation fails with error 304 without them) and of the driver
 *   libraries outside the system directories the sandbox binds anyway (`gpuLibraries`: by default
 *   what `ldconfig -p` lists of the driver: libcuda, libnvidia-*, ...). A CPU replica gets none of these.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { GPU_ENTRY_PATTERN, type GpuFallback } from '../../config/index.js';
import { FerryError } from '../../errors.js';
import type { WorkloadType } from '../../flavors/index.js';

/** One GPU a replica can be given. */
export interface GpuDevice {
  /** What the replica's `CUDA_VISIBLE_DEVICES` names: the UUID ("GPU-5d3e…") when known, else the configured entry ("0"). */
  id: string;
  /** The GPU's device node, e.g. "/dev/nvidia0"; undefined when unknown (every `/dev/nvidia<N>` is passed then). */
  deviceFile?: string;
  /** The PCI bus id, e.g. "0000:3b:00.0", when known: its sysfs directory is bound for the driver. */
  pciBusId?: string;
  /** The model, e.g. "NVIDIA H100 80GB HBM3", when known (logs only). */
  name?: string;
}

/** The server's GPU settings, as the runtime receives them. */
export interface GpuSettings {
  /** "auto": discovered (see the file comment); else UUIDs ("GPU-…", "MIG-…") or indices ("0"). */
  gpus: 'auto' | readonly string[];
  gpuFallback: GpuFallback;
  /** "auto": the driver's libraries `ldconfig -p` lists (`parseLdconfig`); else these paths. Bound read-only for GPU replicas. */
  gpuLibraries: 'auto' | readonly string[];
}

/** What one replica process is given for its workload type. */
export interface GpuPlacement {
  /** The workload type the replica is told: the spec's, or CPU when a GPU replica fell back. */
  workloadType: WorkloadType;
  /** Set over the replica's scrubbed environment (and passed on to its Python worker). */
  env: Record<string, string>;
  /** Device nodes passed into its sandbox (`--dev-bind`). */
  devices: string[];
  /** Extra read-only binds in its sandbox: driver sysfs and libraries. */
  readOnly: string[];
  /** The GPU it got, if any. */
  gpu?: GpuDevice;
  /** Why a GPU replica runs on the CPU (gpuFallback "cpu"), for its log. */
  fallback?: string;
}

/** Where the driver lists its GPUs, one directory per PCI bus id. */
export const PROC_GPUS_DIR = '/proc/driver/nvidia/gpus';
/** Device nodes every CUDA process opens besides its GPU's own `nvidia<minor>`. */
const CONTROL_NODES = ['nvidiactl', 'nvidia-uvm', 'nvidia-uvm-tools', 'nvidia-modeset', 'nvidia-caps'];
/** The driver's sysfs a CUDA process reads at initialisation (error 304, "OS call failed", without it). */
const DRIVER_SYSFS = ['/sys/module/nvidia', '/sys/module/nvidia_uvm', '/sys/devices/system/cpu', '/sys/devices/system/node'];
/** Bound into every sandbox already (./sandbox.ts): a library under them needs no bind of its own (and must not get one). */
const SYSTEM_DIRS = ['/usr', '/lib', '/lib32', '/lib64', '/libx32', '/bin', '/sbin'];
/** `nvidia-smi -L` and `ldconfig -p` answer in milliseconds; a hung driver must not hold the server's start. */
const PROBE_TIMEOUT_MS = 10_000;

/**
 * The GPU described by one `/proc/driver/nvidia/gpus/<bus id>/information` file, e.g.
 * "Model: NVIDIA H100 80GB HBM3\nGPU UUID: GPU-5d3e…\nBus Location: 0000:00:05.0\nDevice Minor: 0"
 * → {id: "GPU-5d3e…", deviceFile: "/dev/nvidia0", pciBusId: "0000:00:05.0", name: "NVIDIA H100 80GB HBM3"}.
 * Undefined without a UUID.
 */
export function parseGpuInformation(text: string, busId: string): GpuDevice | undefined {
  const field = (name: string): string | undefined => new RegExp(`^${name}:\\s*(.+?)\\s*$`, 'm').exec(text)?.[1];
  const uuid = field('GPU UUID');
  if (uuid === undefined || !GPU_ENTRY_PATTERN.test(uuid)) return undefined;
  const minor = field('Device Minor');
  const name = field('Model');
  return {
    id: uuid,
    ...(minor !== undefined && /^\d+$/.test(minor) ? { deviceFile: `/dev/nvidia${minor}` } : {}),
    pciBusId: field('Bus Location') ?? busId,
    ...(name === undefined ? {} : { name }),
  };
}

/**
 * The GPUs of `nvidia-smi -L`'s output, in its order: "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5d3e…)"
 * → {id: "GPU-5d3e…", name: "NVIDIA H100 80GB HBM3"}. MIG lines (indented) are skipped: a MIG
 * instance is named in the `gpus` setting.
 */
export function parseNvidiaSmiList(text: string): GpuDevice[] {
  const out: GpuDevice[] = [];
  for (const line of text.split('\n')) {
    const m = /^GPU \d+: (.+?) \(UUID: (GPU-[0-9A-Fa-f-]+)\)\s*$/.exec(line);
    if (m !== null) out.push({ id: m[2]!, name: m[1]! });
  }
  return out;
}

/**
 * The NVIDIA driver's libraries in `ldconfig -p`'s output (libcuda, libcudadebugger, libnvidia-*,
 * libnvcuvid; not the CUDA toolkit's libcudart or libcublas, which come with the model's Python
 * packages), e.g. "\tlibcuda.so.1 (libc6,x86-64) => /usr/local/nvidia/lib64/libcuda.so.1" → that path.
 */
export function parseLdconfig(text: string): string[] {
  const out = new Set<string>();
  for (const line of text.split('\n')) {
    const m = /^\s*(libcuda\.so|libcudadebugger\.so|libnvidia-|libnvcuvid\.so)\S* \([^)]*\) => (\/\S+)\s*$/.exec(line);
    if (m !== null) out.add(m[2]!);
  }
  return [...out];
}

/**
 * The GPUs replicas may use, from the setting and what was discovered (pure). An entry of the
 * setting (or of the server's `CUDA_VISIBLE_DEVICES` under "auto") is matched by UUID, or by
 * index into the discovered list (nvidia-smi's order); one that matches nothing is used as given
 * (its device node unknown). Example: setting ["1"], discovered [A, B] → [B].
 */
export function resolveGpus(setting: 'auto' | readonly string[], discovered: readonly GpuDevice[], serverVisible: string | undefined): GpuDevice[] {
  const entries = setting !== 'auto' ? setting : serverVisible === undefined ? undefined : serverVisible.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (entries === undefined) return [...discovered];
  return entries.map((entry) => discovered.find((d) => d.id === entry) ?? (/^\d+$/.test(entry) ? discovered[Number(entry)] : undefined) ?? { id: entry });
}

/**
 * The GPU for a new replica (pure): the one with the fewest replicas on it now (`counts`: GPU id →
 * replicas), ties to the first listed; undefined when there is none. Example: [A, B] with
 * {A: 1} → B; with {A: 1, B: 1} → A.
 */
export function chooseGpu(devices: readonly GpuDevice[], counts: ReadonlyMap<string, number>): GpuDevice | undefined {
  let best: GpuDevice | undefined;
  for (const d of devices) {
    if (best === undefined || (counts.get(d.id) ?? 0) < (counts.get(best.id) ?? 0)) best = d;
  }
  return best;
}

/**
 * The device nodes a replica on `gpu` needs, among the names in `devDir` (normally /dev): the
 * control nodes and its own GPU's node, or every `nvidia<N>` when that is unknown.
 */
export function gpuDeviceFiles(gpu: GpuDevice, devDir: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(devDir);
  } catch {
    return [];
  }
  const own = gpu.deviceFile === undefined ? undefined : path.basename(gpu.deviceFile);
  return names
    .filter((n) => CONTROL_NODES.includes(n) || (own === undefined ? /^nvidia\d+$/.test(n) : n === own))
    .sort()
    .map((n) => path.join(devDir, n));
}

function isUnder(p: string, dirs: readonly string[]): boolean {
  return dirs.some((d) => p === d || p.startsWith(`${d}/`));
}

/** Where discovery looks; tests point it at fixtures. */
export interface GpuProbes {
  procGpusDir: string;
  devDir: string;
  /** `nvidia-smi -L`'s output, or undefined when it is not installed or fails. */
  nvidiaSmiList: () => Promise<string | undefined>;
  /** `ldconfig -p`'s output, or undefined. */
  ldconfig: () => Promise<string | undefined>;
  /** The server's own `CUDA_VISIBLE_DEVICES`. */
  serverVisible: string | undefined;
}

function run(file: string, args: string[]): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: PROBE_TIMEOUT_MS, env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' } }, (err, stdout) => {
      resolve(err === null ? stdout : undefined);
    });
  });
}

/** The real host: /proc, /dev, `nvidia-smi` and `ldconfig` on the system PATH. */
export const HOST_PROBES: GpuProbes = {
  procGpusDir: PROC_GPUS_DIR,
  devDir: '/dev',
  nvidiaSmiList: () => run('nvidia-smi', ['-L']),
  ldconfig: () => run('ldconfig', ['-p']),
  serverVisible: process.env.CUDA_VISIBLE_DEVICES,
};

/** The GPUs the driver lists, and where they were found; a missing driver is an empty list. */
export async function discoverGpus(probes: GpuProbes): Promise<{ devices: GpuDevice[]; source: string }> {
  let busIds: string[] = [];
  try {
    busIds = fs.readdirSync(probes.procGpusDir).sort();
  } catch {
    // No NVIDIA driver loaded (or /proc not visible here).
  }
  const fromProc = busIds.flatMap((busId) => {
    try {
      const gpu = parseGpuInformation(fs.readFileSync(path.join(probes.procGpusDir, busId, 'information'), 'utf8'), busId);
      return gpu === undefined ? [] : [gpu];
    } catch {
      return [];
    }
  });
  if (fromProc.length > 0) return { devices: fromProc, source: probes.procGpusDir };
  const smi = await probes.nvidiaSmiList();
  const fromSmi = smi === undefined ? [] : parseNvidiaSmiList(smi);
  if (fromSmi.length > 0) return { devices: fromSmi, source: 'nvidia-smi -L' };
  return { devices: [], source: `none found (${probes.procGpusDir}: ${busIds.length === 0 ? 'absent or empty' : 'no UUID'}; nvidia-smi -L: ${smi === undefined ? 'not installed or failed' : 'no GPU'})` };
}

/**
 * The host's GPUs and who uses them: one per local runtime, opened with the server's settings.
 * `place` is synchronous, so two replicas starting together never count the same GPU as free.
 */
export class GpuPool {
  /** Replica id → the GPU id it was given. */
  private readonly assigned = new Map<string, string>();

  private constructor(
    /** The GPUs replicas may use. */
    readonly devices: readonly GpuDevice[],
    /** Where `devices` came from, for the server's start log. */
    readonly source: string,
    /** Driver libraries bound read-only for GPU replicas (outside the system directories). */
    readonly libraries: readonly string[],
    private readonly fallback: GpuFallback,
    private readonly devDir: string,
  ) {}

  /** Discovers the GPUs and driver libraries (see the file comment) and applies the settings. */
  static async open(settings: GpuSettings, probes: GpuProbes = HOST_PROBES): Promise<GpuPool> {
    const discovered = await discoverGpus(probes);
    const devices = resolveGpus(settings.gpus, discovered.devices, probes.serverVisible);
    const source = settings.gpus !== 'auto' ? 'the gpus setting' : probes.serverVisible !== undefined ? "the server's CUDA_VISIBLE_DEVICES" : discovered.source;
    // Libraries are only looked for when a GPU replica could start.
    const listed = settings.gpuLibraries !== 'auto' ? settings.gpuLibraries : devices.length === 0 ? [] : parseLdconfig((await probes.ldconfig()) ?? '');
    const libraries = listed.filter((p) => path.isAbsolute(p) && !isUnder(p, SYSTEM_DIRS));
    return new GpuPool(devices, source, libraries, settings.gpuFallback, probes.devDir);
  }

  /**
   * What replica `id` of `workloadType` gets. A GPU replica takes the least used GPU (held until
   * `release(id)`); with none, it is refused (INVALID_PARAMETER_VALUE naming the settings) or
   * falls back to the CPU, per `gpuFallback`.
   */
  place(id: string, workloadType: WorkloadType): GpuPlacement {
    const cpu: GpuPlacement = { workloadType: 'CPU', env: { CUDA_VISIBLE_DEVICES: '' }, devices: [], readOnly: [] };
    if (workloadType === 'CPU') return cpu;
    const counts = new Map<string, number>();
    for (const gpuId of this.assigned.values()) counts.set(gpuId, (counts.get(gpuId) ?? 0) + 1);
    const gpu = chooseGpu(this.devices, counts);
    if (gpu === undefined) {
      const why = `this server has no GPU for it (${this.source})`;
      if (this.fallback === 'cpu') return { ...cpu, fallback: `workload_type ${workloadType}, but ${why}; it runs on the CPU (gpuFallback is "cpu")` };
      throw new FerryError('INVALID_PARAMETER_VALUE', `Replica '${id}' has workload_type ${workloadType}, but ${why}. `
        + 'Serve it with workload_type CPU, list the GPUs in the server\'s gpus setting, or set gpuFallback: "cpu" to run GPU workloads on the CPU.');
    }
    this.assigned.set(id, gpu.id);
    const sysfs = gpu.pciBusId === undefined ? [] : [`/sys/bus/pci/devices/${gpu.pciBusId}`];
    return {
      workloadType,
      // PCI order: an index in the gpus setting means what nvidia-smi shows.
      env: { CUDA_VISIBLE_DEVICES: gpu.id, CUDA_DEVICE_ORDER: 'PCI_BUS_ID' },
      devices: gpuDeviceFiles(gpu, this.devDir),
      readOnly: [...DRIVER_SYSFS, ...sysfs, ...this.libraries],
      gpu,
    };
  }

  /** Frees replica `id`'s GPU (a no-op for CPU replicas and unknown ids). */
  release(id: string): void {
    this.assigned.delete(id);
  }
}
