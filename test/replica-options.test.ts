/**
 * The replica options schema (src/replica/options.ts): every option survives toArgv → fromArgv
 * and the JSON start message; a flag left out takes the one default, which is the server's.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compileServerConfig } from '../src/config/index.js';
import type { LoadOptions } from '../src/flavors/index.js';
import {
  fromArgv, optionsFromMessage, REPLICA_DEFAULTS, ReplicaArgvError, toArgv, type ReplicaCommand, type ReplicaOptions,
} from '../src/replica/options.js';

/** Every option set, none at its default: a field the codec drops or mangles fails the round trip. */
const everyOption: Required<ReplicaOptions> & { loadOptions: Required<Omit<LoadOptions, 'processUser'>> } = {
  socketPath: '',
  listen: { host: '10.0.0.7', port: 8443 },
  dir: '/var/lib/ferry/model',
  flavor: 'python',
  loadOptions: { modelFile: '', workloadType: 'GPU_SMALL', intraOpThreads: 3, memoryLimitBytes: 3 * 1024 ** 3, pythonExecutable: '/opt/py/bin/python3', pythonLinkFd: 4 },
  modelName: 'fraud',
  modelVersion: '12',
  maxBodyBytes: 1234567,
  drainTimeoutMs: 4500,
  maxRowsPerRequest: 77,
  maxJsonDepth: 9,
  maxJsonElements: 999,
  batching: { enabled: false, maxBatchSize: 7, maxQueueDelayUs: 250, preferredBatchSizes: [2, 4] },
  execution: 'inline',
  logLevel: 'debug',
  user: { uid: 65534, gid: 65533 },
  family: { cacheBytes: 512 * 1024 ** 2, sessionFallback: false },
};

/** A spawned single-model replica on a Unix socket: the other branch of each either-or option. */
const onSocket: ReplicaOptions = {
  socketPath: '/run/ferry/sockets/r1/replica.sock',
  dir: '/run/ferry/models/r1',
  flavor: 'onnx',
  loadOptions: { modelFile: 'model.onnx', workloadType: 'CPU', intraOpThreads: 1 },
  modelName: 'iris',
  modelVersion: '1',
  maxBodyBytes: 16 * 1024 * 1024,
  drainTimeoutMs: 30_000,
  maxRowsPerRequest: 100_000,
  maxJsonDepth: 64,
  maxJsonElements: 4_194_304,
  batching: { enabled: true, maxBatchSize: 64, maxQueueDelayUs: 0, preferredBatchSizes: [] },
};

describe('replica options', () => {
  const commands: [string, ReplicaCommand][] = [
    ['every option (pod, family)', { options: everyOption, artifact: { path: 'models/fraud/12', sha256: 'a'.repeat(64), store: '{"type":"local","root":"/data"}' } }],
    ['a spawned replica with a control channel', { control: true, options: onSocket }],
    ['a warm pool process', { control: true, pool: '/run/ferry/pool/k1' }],
  ];
  for (const [what, cmd] of commands) {
    test(`round-trips through toArgv/fromArgv: ${what}`, () => {
      assert.deepEqual(fromArgv(toArgv(cmd)), cmd);
    });
  }

  test('every option but listen round-trips through the start message', () => {
    const { listen: _, ...options } = everyOption;
    for (const o of [options, onSocket]) {
      const withSocket = { ...o, socketPath: '/s/replica.sock' };
      assert.deepEqual(optionsFromMessage(JSON.parse(JSON.stringify({ type: 'start', options: withSocket }))), withSocket);
    }
  });

  test('a flag left out takes REPLICA_DEFAULTS, which are the server config defaults', () => {
    const { options } = fromArgv(['--socket', '/s', '--dir', '/m', '--model-file', 'm.onnx', '--name', 'n', '--version', '1']);
    const server = compileServerConfig({});
    assert.deepEqual(options, {
      socketPath: '/s', dir: '/m', flavor: REPLICA_DEFAULTS.flavor,
      loadOptions: { modelFile: 'm.onnx', workloadType: REPLICA_DEFAULTS.workloadType, intraOpThreads: REPLICA_DEFAULTS.intraOpThreads },
      modelName: 'n', modelVersion: '1',
      maxBodyBytes: server.maxBodyBytes, drainTimeoutMs: server.replicaDrainTimeoutMs,
      maxRowsPerRequest: server.maxRowsPerRequest, maxJsonDepth: server.maxJsonDepth, maxJsonElements: server.maxJsonElements,
      batching: { ...REPLICA_DEFAULTS.batching },
    });
  });

  test('a bad flag is refused naming the flag and its value', () => {
    const base = ['--socket', '/s', '--dir', '/m', '--model-file', 'm.onnx', '--name', 'n', '--version', '1'];
    const cases: [string[], RegExp][] = [
      [['--flavor', 'tensorflow'], /--flavor 'tensorflow'/],
      [['--workload-type', 'TPU'], /--workload-type must be one of CPU, .*'TPU'/],
      [['--max-body-bytes', '12k'], /--max-body-bytes must be a whole number ≥ 1, got '12k'/],
      [['--uid', '5'], /--uid and --gid go together/],
      [['--listen', 'host:0'], /--listen must be \[HOST\]:PORT, got 'host:0'/],
      [['--preferred-batch-sizes', '2,x'], /--preferred-batch-sizes .*'2,x'/],
      [['--artifact-path', 'k', '--sha256', 'xyz'], /--sha256 .*'xyz'/],
      [['--bogus', '1'], /bogus/],
    ];
    for (const [extra, message] of cases) assert.throws(() => fromArgv([...base, ...extra]), (err: unknown) => err instanceof ReplicaArgvError && message.test(err.message), extra.join(' '));
    assert.throws(() => fromArgv(['--dir', '/m']), /--socket is required/);
  });

  test('a malformed start message is refused naming the field', () => {
    const message = { type: 'start', options: { ...onSocket, batching: { ...onSocket.batching, maxBatchSize: -1 } } };
    assert.throws(() => optionsFromMessage(message), /batching.maxBatchSize is not a number ≥ 0/);
  });
});
