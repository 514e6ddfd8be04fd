/**
 * `node dist/bench/python-link.js [--python /usr/bin/python3] [--calls 2000]`
 *
 * The cost of the replica ↔ Python worker link per model call (docs/benchmarks.md): a scikit-learn
 * LinearRegression with a tensor signature (float64 [-1, 4]), pickled here and described by a
 * hand-written MLmodel (no MLflow needed: the worker's own sklearn loader serves it), is called
 * through the python flavor exactly as a replica calls it, at 1 and 64 rows per call. The same
 * `predict` on the same arrays is timed inside Python; the difference of the medians is what the
 * link adds per call (framing, the socketpair both ways, numpy views, decoding the answer).
 * Wall time on a busy machine is mostly the two processes waiting to be scheduled, so each size
 * also gets the CPU time per call of this process (the replica's side) and of the worker
 * (/proc/<pid>/stat, 10 ms resolution: over 2,000 calls, ±5 µs).
 */
import { execFile } from 'node:child_process';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { parseArgs } from 'node:util';
import { getFlavor } from '../src/flavors/index.js';
import type { Tensor } from '../src/tensor/index.js';
import { cpuSnapshot, processTree } from './procs.js';

const run = promisify(execFile);
const { values } = parseArgs({ options: { python: { type: 'string', default: '/usr/bin/python3' }, calls: { type: 'string', default: '2000' } } });
const python = values.python;
const calls = Number(values.calls);

const MLMODEL = `flavors:
  python_function:
    loader_module: mlflow.sklearn
    model_path: model.pkl
  sklearn:
    pickled_model: model.pkl
    serialization_format: pickle
signature:
  inputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 4]}}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1]}}]'
`;

/** Fits and pickles the model, then times `predict` in-process: median µs per call at each batch size. */
const PYTHON_SIDE = `
import pickle, sys, time, numpy as np
from sklearn.linear_model import LinearRegression
x = np.arange(40, dtype=np.float64).reshape(10, 4)
m = LinearRegression().fit(x, x.sum(axis=1))
pickle.dump(m, open(sys.argv[1], "wb"))
out = {}
for rows in (1, 64):
    a = np.ones((rows, 4))
    ts = []
    for _ in range(${Math.max(200, calls)}):
        t = time.perf_counter(); m.predict(a); ts.append(time.perf_counter() - t)
    out[rows] = sorted(ts)[len(ts) // 2] * 1e6
print(out[1], out[64])
`;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'ferry-bench-python-'));
try {
  await fsp.writeFile(path.join(dir, 'MLmodel'), MLMODEL);
  const { stdout } = await run(python, ['-c', PYTHON_SIDE, path.join(dir, 'model.pkl')], { env: { OMP_NUM_THREADS: '1', OPENBLAS_NUM_THREADS: '1' } });
  const [inProcess1, inProcess64] = stdout.trim().split(' ').map(Number) as [number, number];
  const flavor = await getFlavor('python');
  const model = await flavor.load(dir, { modelFile: 'MLmodel', workloadType: 'CPU', intraOpThreads: 1, pythonExecutable: python });
  const worker = [...processTree(process.pid, { rootLabel: 'bench', labelOf: (cmd) => (cmd.includes('ferry_worker.py') ? 'worker' : undefined) })]
    .find(([, label]) => label === 'worker')?.[0];
  if (worker === undefined) throw new Error('found no ferry_worker.py process under this one');
  const rows: string[] = [];
  for (const [n, inProcess] of [[1, inProcess1], [64, inProcess64]] as const) {
    const input: Tensor = { dtype: 'float64', shape: [n, 4], data: new Float64Array(n * 4).fill(1) };
    for (let i = 0; i < 200; i++) await model.predict({ input });
    const ts: number[] = [];
    const node0 = process.cpuUsage();
    const worker0 = cpuSnapshot([worker]).get(worker) ?? NaN;
    for (let i = 0; i < calls; i++) {
      const t = performance.now();
      await model.predict({ input });
      ts.push((performance.now() - t) * 1000);
    }
    const node = process.cpuUsage(node0);
    const workerUs = (cpuSnapshot([worker]).get(worker) ?? NaN) - worker0;
    const through = median(ts);
    rows.push(`| ${n} | ${through.toFixed(1)} | ${inProcess.toFixed(1)} | ${(through - inProcess).toFixed(1)} | ${((node.user + node.system) / calls).toFixed(1)} | ${(workerUs / calls).toFixed(1)} |`);
  }
  await model.close();
  console.log(`python: ${python}, ${calls} calls per batch size, medians\n`);
  console.log('| rows per call | through the link (µs) | predict in Python (µs) | link overhead (µs) | CPU µs per call, replica side | CPU µs per call, worker |\n|---|---|---|---|---|---|');
  console.log(rows.join('\n'));
} finally {
  await fsp.rm(dir, { recursive: true, force: true });
}
