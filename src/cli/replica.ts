/**
 * `ferry replica`: one model replica (see docs/architecture.md). `bin/ferry.js` runs this module
 * directly for that command, not `./main.ts`: a replica process loads only the replica's code
 * (no client, no auth, no server; test/replica-modules.test.ts lists what it loads). Its flags
 * are `src/replica/options.ts`'s `fromArgv`. Exit codes: 1 the replica failed to start, 2 usage.
 */
import { log, openControl, startReplica, awaitPoolClaim, type Replica } from '../replica/index.js';
import { fromArgv, ReplicaArgvError, type ArtifactSource, type ReplicaOptions } from '../replica/options.js';
import { exitOnStopSignals, onStopSignals } from './signals.js';

/** The entry `bin/ferry.js` calls with the arguments after `replica`. */
export async function main(args: string[]): Promise<void> {
  exitOnStopSignals();
  try {
    await replicaCommand(args);
  } catch (err) {
    if (!(err instanceof ReplicaArgvError)) throw err;
    process.stderr.write(`ferry: replica: ${err.message}.\nRun 'ferry --help' for usage.\n`);
    process.exitCode = 2;
  }
}

/** Runs the replica; throws `ReplicaArgvError` for a command line that does not parse. */
export async function replicaCommand(args: string[]): Promise<void> {
  const cmd = fromArgv(args);
  const storeJson = cmd.artifact?.store ?? process.env.FERRY_ARTIFACT_STORE;
  if (cmd.artifact !== undefined && storeJson === undefined) throw new ReplicaArgvError('--artifact-path needs --artifact-store JSON or FERRY_ARTIFACT_STORE');
  const membersJson = cmd.membersFromStore === undefined ? undefined : cmd.membersFromStore.store ?? process.env.FERRY_ARTIFACT_STORE;
  if (cmd.membersFromStore !== undefined && membersJson === undefined) throw new ReplicaArgvError('--members-from-store needs --artifact-store JSON or FERRY_ARTIFACT_STORE');
  // The local runtime's control channel on descriptor 3 (its lifeline, the warm pool's claim, a
  // family's model bytes, `drain`); absent when started by hand or in a pod.
  const control = cmd.control === true ? openControl() : undefined;
  // SIGTERM, or `drain` from the runtime (in a sandbox a signal reaches the sandbox, not this
  // process): a replica drains and exits; a process still loading or idle in the pool just exits.
  const running: { replica?: Replica } = {};
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    log('info', 'draining');
    if (running.replica === undefined) process.exit(0);
    running.replica.close().then(() => process.exit(0), () => process.exit(1));
  };
  onStopSignals(stop);
  control?.onFrame(({ header }) => {
    if (header.type === 'drain') stop();
  });
  const failed = (err: unknown): never => {
    // The runtime reads this line to explain a failed start.
    log('error', 'replica failed to start', { error: err instanceof Error ? err.message : String(err) });
    process.exit(1);
  };
  // Warm pool: the options arrive over the control channel once a replica claims this process.
  let options = cmd.options ?? await awaitPoolClaim().catch(failed);
  // An empty --listen host is the pod's IP (env POD_IP, from the downward API), else every interface.
  if (options.listen !== undefined && options.listen.host === '') options = { ...options, listen: { ...options.listen, host: process.env.POD_IP || '0.0.0.0' } };
  if (cmd.artifact !== undefined && storeJson !== undefined) options = await fetchModel(cmd.artifact, storeJson, options).catch(failed);
  if (options.family !== undefined && membersJson !== undefined) {
    // A family pod: no runtime stages its members; it fetches each one from the store on a miss.
    const { parseArtifactStoreLocation } = await import('../artifacts/index.js');
    const where = cmd.membersFromStore?.store === undefined ? 'FERRY_ARTIFACT_STORE' : '--artifact-store';
    options = { ...options, family: { ...options.family, artifactStore: parseArtifactStoreLocation(membersJson, where) } };
  }
  running.replica = await startReplica(options).catch(failed);
  if (stopping) await running.replica.close().then(() => process.exit(0), () => process.exit(1));
}

/**
 * Pod mode: the model comes from the artifact store, not from a directory the runtime prepared.
 * The store's code (the S3 client) is imported only here.
 */
async function fetchModel(artifact: ArtifactSource, storeJson: string, options: ReplicaOptions): Promise<ReplicaOptions> {
  const { fetchArtifact, parseArtifactStoreLocation } = await import('../artifacts/index.js');
  const location = parseArtifactStoreLocation(storeJson, artifact.store === undefined ? 'FERRY_ARTIFACT_STORE' : '--artifact-store');
  return { ...options, dir: await fetchArtifact(location, artifact.path, artifact.sha256, options.dir) };
}
