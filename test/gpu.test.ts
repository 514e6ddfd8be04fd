/**
 * GPU replicas, on a machine without a GPU:
 * - discovery and placement (src/runtime/local/gpu.ts) against a fake driver: a
 *   /proc/driver/nvidia/gpus tree, a /dev with NVIDIA nodes and an `ldconfig -p` listing, all in a
 *   temp directory; the bubblewrap argv and the environment a GPU replica gets from them (its own
 *   GPU's node and the control nodes, the driver libraries outside the system directories), and
 *   that a CPU replica gets none of it;
 * - the real server with a PyTorch model in the mlflow.pytorch layout (scripts/gpu-check-model.py)
 *   served by Ferry's own PyTorch loader (no MLflow) in the sandboxed Python worker: on the CPU, equal
 *   to the model's own answers; on GPU_SMALL with a GPU listed in the `gpus` setting, the load fails
 *   saying that CUDA does not work and naming the replica's CUDA_VISIBLE_DEVICES (the chosen GPU made
 *   it through the runtime, the replica and into the worker); on GPU_SMALL with no GPU and
 *   `gpuFallback: "cpu"`, served on the CPU with the reason in the replica's log.
 * The server tests need /usr/bin/python3 with torch (Debian's python3-torch) and cloudpickle; with
 * MLflow on FERRY_MLFLOW_PATH (as test/flavor-python.test.ts finds it), a model saved by MLflow's own
 * mlflow.pytorch.save_model is served by Ferry's own loader too.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { compileServerConfig } from '../src/config/index.js';
import {
  chooseGpu, GpuPool, parseGpuInformation, parseLdconfig, parseNvidiaSmiList, resolveGpus, type GpuDevice, type GpuPlacement, type GpuProbes,
} from '../src/runtime/local/gpu.js';
import { sandboxed } from '../src/runtime/local/sandbox.js';
import type { FerryServer } from '../src/server/index.js';
import { MLFLOW_PATH, pythonImports, registerVersion, request, ROOT, startTestServer, SYSTEM_PYTHON, tempDir, waitSettled } from './support/index.js';

const run = promisify(execFile);
const UUID_A = 'GPU-5d3e0c2a-1111-2222-3333-444444444444';
const UUID_B = 'GPU-9f00aa17-5555-6666-7777-888888888888';
const H100_INFO = (uuid: string, minor: number, bus: string): string =>
  `Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t 42\nGPU UUID: \t ${uuid}\nVideo BIOS: \t 96.00.99.00.01\nBus Type: \t PCIe\n`
  + `DMA Size: \t 52 bits\nDMA Mask: \t 0xfffffffffffff\nBus Location: \t ${bus}\nDevice Minor: \t ${minor}\nGPU Excluded:\t No\n`;

describe('GPU discovery and placement (fake driver)', () => {
  let dir: string;
  let probes: GpuProbes;
  let driverLib: string;

  before(async () => {
    dir = await tempDir('ferry-gpu-');
    const proc = path.join(dir, 'proc-gpus');
    for (const [bus, uuid, minor] of [['0000:00:05.0', UUID_A, 0], ['0000:00:06.0', UUID_B, 1]] as const) {
      await fsp.mkdir(path.join(proc, bus), { recursive: true });
      await fsp.writeFile(path.join(proc, bus, 'information'), H100_INFO(uuid, minor, bus));
    }
    const dev = path.join(dir, 'dev');
    await fsp.mkdir(path.join(dev, 'nvidia-caps'), { recursive: true });
    for (const n of ['nvidia0', 'nvidia1', 'nvidiactl', 'nvidia-uvm', 'nvidia-uvm-tools', 'null', 'nvme0']) await fsp.writeFile(path.join(dev, n), '');
    driverLib = path.join(dir, 'driver', 'libcuda.so.1');
    await fsp.mkdir(path.dirname(driverLib));
    await fsp.writeFile(driverLib, '');
    const ldconfig = `1234 libs found in cache \`/etc/ld.so.cache'\n\tlibz.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libz.so.1\n`
      + `\tlibnvidia-ml.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1\n\tlibcuda.so.1 (libc6,x86-64) => ${driverLib}\n`;
    probes = { procGpusDir: proc, devDir: dev, nvidiaSmiList: () => Promise.resolve(undefined), ldconfig: () => Promise.resolve(ldconfig), serverVisible: undefined };
  });
  after(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  test('the driver\'s information file, nvidia-smi -L and ldconfig -p are parsed', () => {
    assert.deepEqual(parseGpuInformation(H100_INFO(UUID_A, 3, '0000:3b:00.0'), 'x'), {
      id: UUID_A, deviceFile: '/dev/nvidia3', pciBusId: '0000:3b:00.0', name: 'NVIDIA H100 80GB HBM3',
    });
    assert.equal(parseGpuInformation('Model: something\n', 'x'), undefined, 'no UUID: not a GPU Ferry can name');
    assert.deepEqual(parseNvidiaSmiList(`GPU 0: NVIDIA H100 80GB HBM3 (UUID: ${UUID_A})\n  MIG 1g.10gb     Device  0: (UUID: MIG-0a1b2c3d-0000-1111-2222-333333333333)\nGPU 1: NVIDIA H100 80GB HBM3 (UUID: ${UUID_B})\n`), [
      { id: UUID_A, name: 'NVIDIA H100 80GB HBM3' }, { id: UUID_B, name: 'NVIDIA H100 80GB HBM3' },
    ]);
    assert.deepEqual(parseLdconfig('\tlibcudart.so.12 (libc6,x86-64) => /opt/x/libcudart.so.12\n\tlibcuda.so.1 (libc6,x86-64) => /opt/d/libcuda.so.1\n\tlibnvidia-ptxjitcompiler.so.1 (libc6,x86-64) => /opt/d/libnvidia-ptxjitcompiler.so.1\n'), [
      '/opt/d/libcuda.so.1', '/opt/d/libnvidia-ptxjitcompiler.so.1',
    ], 'the driver\'s, not the toolkit\'s libcudart');
  });

  test('the gpus setting and the server\'s CUDA_VISIBLE_DEVICES pick among the discovered GPUs', () => {
    const a: GpuDevice = { id: UUID_A, deviceFile: '/dev/nvidia0' };
    const b: GpuDevice = { id: UUID_B, deviceFile: '/dev/nvidia1' };
    assert.deepEqual(resolveGpus('auto', [a, b], undefined), [a, b]);
    assert.deepEqual(resolveGpus(['1'], [a, b], undefined), [b], 'an index is nvidia-smi\'s (PCI) order');
    assert.deepEqual(resolveGpus([UUID_A, 'GPU-00000000-0000-0000-0000-000000000000'], [a, b], undefined), [a, { id: 'GPU-00000000-0000-0000-0000-000000000000' }]);
    assert.deepEqual(resolveGpus('auto', [a, b], `${UUID_B}`), [b]);
    assert.deepEqual(resolveGpus('auto', [a, b], ''), [], 'CUDA_VISIBLE_DEVICES="" hides every GPU');
    assert.deepEqual(resolveGpus([], [a, b], undefined), []);
  });

  test('a new replica gets the least used GPU, ties to the first', () => {
    const devices = [{ id: 'A' }, { id: 'B' }];
    assert.equal(chooseGpu(devices, new Map())?.id, 'A');
    assert.equal(chooseGpu(devices, new Map([['A', 1]]))?.id, 'B');
    assert.equal(chooseGpu(devices, new Map([['A', 1], ['B', 1]]))?.id, 'A');
    assert.equal(chooseGpu(devices, new Map([['A', 2], ['B', 1]]))?.id, 'B');
    assert.equal(chooseGpu([], new Map()), undefined);
  });

  test('a GPU replica gets its own GPU\'s node, the control nodes and the driver libraries; a CPU replica none', async () => {
    const pool = await GpuPool.open({ gpus: 'auto', gpuFallback: 'fail', gpuLibraries: 'auto' }, probes);
    assert.deepEqual(pool.devices.map((d) => d.id), [UUID_A, UUID_B]);
    assert.equal(pool.source, probes.procGpusDir);
    assert.deepEqual(pool.libraries, [driverLib], 'libraries under /usr or /lib are in the sandbox already');
    const dev = (n: string): string => path.join(probes.devDir, n);

    const first = pool.place('r1', 'GPU_SMALL');
    assert.equal(first.workloadType, 'GPU_SMALL');
    assert.deepEqual(first.env, { CUDA_VISIBLE_DEVICES: UUID_A, CUDA_DEVICE_ORDER: 'PCI_BUS_ID' });
    assert.deepEqual(first.devices, ['nvidia-caps', 'nvidia-uvm', 'nvidia-uvm-tools', 'nvidia0', 'nvidiactl'].map(dev));
    assert.ok(first.readOnly.includes('/sys/module/nvidia') && first.readOnly.includes('/sys/bus/pci/devices/0000:00:05.0'), first.readOnly.join(' '));
    assert.ok(first.readOnly.includes(driverLib));
    const second = pool.place('r2', 'GPU_LARGE');
    assert.equal(second.env.CUDA_VISIBLE_DEVICES, UUID_B);
    assert.ok(second.devices.includes(dev('nvidia1')) && !second.devices.includes(dev('nvidia0')), 'only its own GPU\'s node');
    assert.equal(pool.place('r3', 'GPU_MEDIUM').env.CUDA_VISIBLE_DEVICES, UUID_A, 'more GPU replicas than GPUs share them');
    pool.release('r1');
    pool.release('r3');
    assert.equal(pool.place('r4', 'GPU_SMALL').env.CUDA_VISIBLE_DEVICES, UUID_A, 'a released GPU is free again');

    const cpu = pool.place('c1', 'CPU');
    assert.deepEqual(cpu, { workloadType: 'CPU', env: { CUDA_VISIBLE_DEVICES: '' }, devices: [], readOnly: [] });

    // The argv bubblewrap gets for each (the runtime passes the placement as these mounts).
    const bwrap = { kind: 'bwrap' as const, reason: '', bwrap: '/usr/bin/bwrap' };
    const argv = (p: GpuPlacement): string[] => sandboxed(bwrap, { readOnly: p.readOnly, socketDir: dir, modelDir: dir, devices: p.devices }, undefined, ['/usr/bin/node']).args;
    const gpuArgv = argv(first);
    const pairs = (flag: string, args: string[]): string[] => args.flatMap((a, i) => (a === flag ? [args[i + 1] ?? ''] : []));
    assert.deepEqual(pairs('--dev-bind-try', gpuArgv), first.devices);
    assert.ok(pairs('--ro-bind', gpuArgv).includes(driverLib), gpuArgv.join(' '));
    const cpuArgv = argv(cpu);
    assert.deepEqual(pairs('--dev-bind-try', cpuArgv), []);
    assert.ok(!cpuArgv.some((a) => a.includes('nvidia') || a === driverLib), cpuArgv.join(' '));
  });

  test('without the driver\'s /proc list, nvidia-smi -L names the GPUs and every GPU node is passed', async () => {
    const smi: GpuProbes = {
      ...probes, procGpusDir: path.join(dir, 'absent'),
      nvidiaSmiList: () => Promise.resolve(`GPU 0: NVIDIA H100 80GB HBM3 (UUID: ${UUID_A})\nGPU 1: NVIDIA H100 80GB HBM3 (UUID: ${UUID_B})\n`),
    };
    const pool = await GpuPool.open({ gpus: 'auto', gpuFallback: 'fail', gpuLibraries: [] }, smi);
    assert.equal(pool.source, 'nvidia-smi -L');
    assert.deepEqual(pool.libraries, []);
    const p = pool.place('s1', 'GPU_SMALL');
    assert.equal(p.env.CUDA_VISIBLE_DEVICES, UUID_A);
    assert.deepEqual(p.devices, ['nvidia-caps', 'nvidia-uvm', 'nvidia-uvm-tools', 'nvidia0', 'nvidia1', 'nvidiactl'].map((n) => path.join(probes.devDir, n)), 'its minor is unknown: every GPU node');
    assert.ok(!p.readOnly.some((r) => r.startsWith('/sys/bus/pci')), 'no PCI bus id known');
  });

  test('no GPU: a GPU replica is refused naming the settings, or runs on the CPU with gpuFallback "cpu"', async () => {
    const none: GpuProbes = { ...probes, procGpusDir: path.join(dir, 'absent') };
    const failing = await GpuPool.open({ gpus: 'auto', gpuFallback: 'fail', gpuLibraries: 'auto' }, none);
    assert.deepEqual(failing.libraries, [], 'no GPU, no library lookup');
    assert.throws(() => failing.place('g1', 'GPU_SMALL'), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'INVALID_PARAMETER_VALUE');
      assert.match(err.message, /workload_type GPU_SMALL, but this server has no GPU for it \(none found .*absent.*\).*gpuFallback: "cpu"/);
      return true;
    });
    const falling = await GpuPool.open({ gpus: [], gpuFallback: 'cpu', gpuLibraries: 'auto' }, probes);
    const p = falling.place('g2', 'GPU_SMALL');
    assert.equal(p.workloadType, 'CPU');
    assert.deepEqual(p.env, { CUDA_VISIBLE_DEVICES: '' });
    assert.match(p.fallback ?? '', /GPU_SMALL, but this server has no GPU for it \(the gpus setting\); it runs on the CPU/);
  });

  test('the gpus setting is checked at config compile', () => {
    assert.throws(() => compileServerConfig({ gpus: ['0', 'nvidia0'] }), /gpus/);
    assert.throws(() => compileServerConfig({ gpuFallback: 'gpu' }), /gpuFallback/);
    assert.throws(() => compileServerConfig({ gpuLibraries: ['lib/libcuda.so'] }), /gpuLibraries/);
    assert.deepEqual(compileServerConfig({ gpus: ['0', UUID_A] }).gpus, ['0', UUID_A]);
    assert.equal(compileServerConfig({}).gpuFallback, 'fail');
  });
});

const HAVE_TORCH = pythonImports('torch') && pythonImports('cloudpickle');

describe('PyTorch models through the Python worker, CPU and GPU workload types', { skip: HAVE_TORCH ? false : `${SYSTEM_PYTHON} cannot import torch and cloudpickle (Debian: python3-torch python3-cloudpickle)` }, () => {
  let dir: string;
  let modelDir: string;
  /** Saved by mlflow.pytorch.save_model itself, when MLflow is there. */
  let mlflowModelDir: string | undefined;
  const rows = [[0.5, -1, 2, 0.25, 3, -0.75, 1.5, 0], [1, 1, 1, 1, 1, 1, 1, 1], [-2, 0, 0.1, 0.2, -0.3, 4, 0, 9]];
  let expected: number[][];
  let server: FerryServer | undefined;

  before(async () => {
    dir = await tempDir('ferry-gpu-torch-');
    modelDir = path.join(dir, 'mlp');
    const script = path.join(ROOT, 'scripts', 'gpu-check-model.py');
    // A Python without MLflow on its path: the worker uses Ferry's own mlflow.pytorch loader.
    await run(SYSTEM_PYTHON, [script, 'save', modelDir, '8', '32', '3'], { env: { PATH: '/usr/bin:/bin' } });
    if (fs.existsSync(path.join(MLFLOW_PATH, 'mlflow'))) {
      mlflowModelDir = path.join(dir, 'mlp-mlflow');
      const { stdout } = await run(SYSTEM_PYTHON, [script, 'save', mlflowModelDir, '8', '32', '3'], { env: { PATH: '/usr/bin:/bin', PYTHONPATH: MLFLOW_PATH } });
      assert.match(stdout, /"saved_with": "mlflow /);
    }
    await fsp.writeFile(path.join(dir, 'rows.json'), JSON.stringify(rows));
    expected = JSON.parse((await run(SYSTEM_PYTHON, [script, 'reference', modelDir, path.join(dir, 'rows.json')])).stdout) as number[][];
  });
  after(async () => {
    await server?.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  async function serve(name: string, workloadType: string): Promise<any> {
    assert.ok(server !== undefined);
    const r = await request({
      url: server.url, method: 'POST', path: '/api/2.0/serving-endpoints',
      json: { name, config: { served_entities: [{ entity_name: 'mlp', entity_version: '1', workload_type: workloadType, scale_to_zero_enabled: false }] } },
    });
    assert.equal(r.status, 200, r.text);
    return waitSettled(server.url, name, 90_000);
  }

  async function replicaLog(endpoint: string, served: string): Promise<string> {
    assert.ok(server !== undefined);
    const r = await request({ url: server.url, path: `/api/2.0/serving-endpoints/${endpoint}/served-models/${served}/logs` });
    assert.equal(r.status, 200, r.text);
    return r.json.logs as string;
  }

  async function assertServesExpected(name: string): Promise<void> {
    assert.ok(server !== undefined);
    const r = await request({ url: server.url, method: 'POST', path: `/serving-endpoints/${name}/invocations`, json: { inputs: rows } });
    assert.equal(r.status, 200, r.text);
    const got = r.json.predictions as number[][];
    assert.equal(got.length, expected.length);
    got.forEach((row, i) => row.forEach((v, j) => assert.ok(Math.abs(v - expected[i]![j]!) < 1e-5, `row ${i} col ${j}: ${v} vs ${expected[i]![j]}`)));
  }

  test('CPU: served by Ferry\'s own PyTorch loader, equal to the model\'s answers; GPU_SMALL on a listed GPU without CUDA fails saying so', async () => {
    const dataDir = path.join(dir, 'data-listed');
    server = await startTestServer(dataDir, { python: SYSTEM_PYTHON, warmPoolSize: 0, gpus: [UUID_A] });
    await registerVersion(server.url, 'mlp', modelDir);
    const cpu = await serve('mlp-cpu', 'CPU');
    assert.equal(cpu.state.ready, 'READY', JSON.stringify(cpu));
    await assertServesExpected('mlp-cpu');
    const log = await replicaLog('mlp-cpu', cpu.config.served_entities[0].name);
    assert.match(log, /"loader":"ferry pytorch".*"device":"cpu"/);
    if (mlflowModelDir !== undefined) {
      // The same weights (seeded), as MLflow's own save_model writes them: served without MLflow.
      await registerVersion(server.url, 'mlp-mlflow', mlflowModelDir);
      const r = await request({
        url: server.url, method: 'POST', path: '/api/2.0/serving-endpoints',
        json: { name: 'mlp-mlflow', config: { served_entities: [{ entity_name: 'mlp-mlflow', entity_version: '1', scale_to_zero_enabled: false }] } },
      });
      assert.equal(r.status, 200, r.text);
      assert.equal((await waitSettled(server.url, 'mlp-mlflow', 90_000)).state.ready, 'READY');
      await assertServesExpected('mlp-mlflow');
    }

    const gpu = await serve('mlp-gpu', 'GPU_SMALL');
    assert.equal(gpu.state.ready, 'NOT_READY', JSON.stringify(gpu));
    const message = JSON.stringify(gpu.config?.served_entities ?? gpu.pending_config?.served_entities ?? gpu);
    assert.match(message, /CUDA does not work in its Python worker/);
    assert.match(message, new RegExp(`CUDA_VISIBLE_DEVICES='${UUID_A}'`), 'the chosen GPU reached the worker');
    await server.close();
    server = undefined;
  });

  test('GPU_SMALL with no GPU and gpuFallback "cpu": served on the CPU, the reason in its log', async () => {
    const dataDir = path.join(dir, 'data-fallback');
    server = await startTestServer(dataDir, { python: SYSTEM_PYTHON, warmPoolSize: 0, gpus: [], gpuFallback: 'cpu' });
    await registerVersion(server.url, 'mlp', modelDir);
    const gpu = await serve('mlp-gpu', 'GPU_SMALL');
    assert.equal(gpu.state.ready, 'READY', JSON.stringify(gpu));
    await assertServesExpected('mlp-gpu');
    const log = await replicaLog('mlp-gpu', gpu.config.served_entities[0].name);
    assert.match(log, /replica runs on the CPU.*workload_type GPU_SMALL, but this server has no GPU for it/);
    assert.match(log, /"device":"cpu"/);
  });
});
