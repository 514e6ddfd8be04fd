/**
 * A family replica (docs/multi-model.md): it starts with no model and serves any member of its
 * family the gateway names in the path (`/family/{name}/{version}/invocations` or `/infer`, and
 * `GET /family/{name}/{version}` for OIP v2 metadata), keeping the members it used last in a
 * `ModelCache` bounded by bytes. How a miss gets the member's model file is its `StageModel`:
 * - local runtime (`stageThroughRuntime`): it asks the runtime over the control channel and the
 *   runtime sends the bytes: the replica cannot read the artifact store itself (permission model,
 *   dropped uid) and needs no file at all (the model is decoded and compiled, or given to
 *   onnxruntime, from memory); the server looks the model up again, so a replica gets nothing
 *   outside its family;
 * - a pod (`stageFromStore`, ./family-store.ts): the gateway's request carries the member's
 *   artifact key and sha256 in its frame metadata (src/multi/member.ts) and the replica fetches
 *   the tree from the artifact store into memory and verifies it against that digest.
 */
import { FerryError, invalidParameter, isErrorCode, type ErrorBody } from '../errors.js';
import { parseJson } from '../http/index.js';
import { decodeMemberArtifact, loadFamilyModel, ModelCache, MODEL_NAME_PATTERN, VERSION_PATTERN, type FamilyModel, type MemberArtifact } from '../multi/replica.js';
import {
  checkRowCount, decodeMlflowRequest, decodeV2Request, encodeMlflowResponse, encodeV2Answer, v2ModelMetadata,
} from '../protocols/index.js';
import { ModelCallMetrics } from '../telemetry/replica.js';
import type { OutputValue, Tensor } from '../tensor/index.js';
import { controlChannel } from './control.js';
import type { FamilyOptions } from './options.js';
import { rowsOf, v2Body, type Inference, type ModelContext, type ModelRoutes, type RouteRow } from './model-routes.js';

/** A family replica asks its runtime (over the control channel) for a member's model file; part of `ReplicaToRuntime`. */
export interface StageRequest {
  type: 'stage';
  id: number;
  name: string;
  version: number;
}

/**
 * The runtime's answer to a `StageRequest`; part of `RuntimeToReplica`. On the wire the file's
 * bytes are the frame's payload, not part of its JSON header.
 */
export type StageReply =
  | { type: 'staged'; id: number; modelFile: string; bytes: Buffer }
  | { type: 'staged'; id: number; error: ErrorBody };

/**
 * The model file of a member (family members are single-file ONNX or XGBoost models) and its name.
 * `artifact` is where the gateway said the member is (undefined when the request did not say: an
 * HTTP request, or a gateway that does not send it); a runtime that stages members ignores it.
 */
export type StageModel = (name: string, version: number, artifact: MemberArtifact | undefined) => Promise<{ modelFile: string; bytes: Buffer }>;

export function familyModel(f: FamilyOptions, ctx: ModelContext & { maxRows: number; stage: StageModel }): ModelRoutes {
  const modelMetrics = new ModelCallMetrics();
  // The hint is the request's raw member metadata, decoded only on a miss.
  const cache = new ModelCache<FamilyModel, string>({
    budgetBytes: f.cacheBytes,
    load: async (key, member) => {
      const slash = key.indexOf('/');
      const staged = await ctx.stage(key.slice(0, slash), Number(key.slice(slash + 1)), member === undefined ? undefined : decodeMemberArtifact(member));
      // Errors name the member ("Invalid ONNX model 'ads-17/3/model.onnx': …"), not just its file.
      return loadFamilyModel(staged.bytes, { modelFile: `${key}/${staged.modelFile}`, workloadType: 'CPU', intraOpThreads: 1 }, f.sessionFallback);
    },
    close: (m) => m.model.close(),
  });
  /** The member a path names; 400 for a malformed name or version (only the gateway's paths are well formed). */
  const memberOf = (params: Record<string, string>): { name: string; version: string } => {
    const { name = '', version = '' } = params;
    if (!MODEL_NAME_PATTERN.test(name)) throw invalidParameter('name', name, 'a registered model name');
    if (!VERSION_PATTERN.test(version)) throw invalidParameter('version', version, 'a version number');
    return { name, version };
  };
  const predict = async (m: FamilyModel, inputs: Record<string, Tensor>, params: Record<string, unknown> | undefined): Promise<Record<string, OutputValue>> => {
    checkRowCount(inputs, ctx.maxRows);
    const t0 = performance.now();
    try {
      return await m.model.predict(inputs, params);
    } finally {
      modelMetrics.observe(rowsOf(inputs), (performance.now() - t0) / 1000);
    }
  };
  const infer: Inference = async (params, body, _signal, meta) => {
    const { name, version } = memberOf(params);
    const { header, binary } = v2Body(params, body, ctx.jsonLimits);
    return cache.use(`${name}/${version}`, async (m) => {
      const req = decodeV2Request(header, m.model.signature, binary);
      const outputs = await predict(m, req.inputs, req.parameters);
      return encodeV2Answer(outputs, { modelName: name, modelVersion: version, id: req.id, requestedOutputs: req.requestedOutputs }, req);
    }, meta?.member);
  };
  const routes: RouteRow[] = [
    ['POST', '/family/:name/:version/invocations', async (params, body, _signal, meta) => {
      const { name, version } = memberOf(params);
      // Parsed before the model is looked at: a malformed body never costs a load.
      const parsed = parseJson(body, ctx.jsonLimits);
      return cache.use(`${name}/${version}`, async (m) => {
        const req = decodeMlflowRequest(parsed, m.model.signature);
        return encodeMlflowResponse(await predict(m, req.inputs, req.params), req.format);
      }, meta?.member);
    }],
    ['POST', '/family/:name/:version/infer', infer],
    ['POST', '/family/:name/:version/infer/binary/:headerBytes', infer],
    ['GET', '/family/:name/:version', (params, _body, _signal, meta) => {
      const { name, version } = memberOf(params);
      return cache.use(`${name}/${version}`, async (m) => v2ModelMetadata(name, version, m.model.signature, 'onnxruntime_onnx'), meta?.member);
    }],
  ];
  return {
    routes,
    metrics: () => ({ ...modelMetrics.snapshot(), family: cache.stats() }),
    readyFields: { family: true, cacheBytes: f.cacheBytes, sessionFallback: f.sessionFallback },
    close: () => cache.clear(),
  };
}

/** How long a replica waits for the runtime to stage a model before the request fails. */
const STAGE_TIMEOUT_MS = 30_000;
/**
 * Stage requests outstanding at once; one more is answered 503 here (retryable) rather than sent:
 * the runtime treats twice as many as a protocol violation (its `MAX_STAGE_REQUESTS`).
 */
const MAX_STAGE_REQUESTS = 16;

let stageSeq = 0;
const staging = new Map<number, { resolve: (r: { modelFile: string; bytes: Buffer }) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
let listening = false;

/** `StageModel` over the control channel to the local runtime that started this process. */
export const stageThroughRuntime: StageModel = (name, version) => {
  const control = controlChannel();
  if (control === undefined || !control.isOpen) {
    return Promise.reject(new FerryError('MODEL_ERROR', 'This family replica has no runtime to stage models through (it runs under `ferry server`).'));
  }
  if (staging.size >= MAX_STAGE_REQUESTS) {
    return Promise.reject(new FerryError('TEMPORARILY_UNAVAILABLE', `This replica has ${staging.size} models loading; retry shortly.`, { retryAfterS: 1 }));
  }
  if (!listening) {
    listening = true;
    // The runtime is gone (the server died): nothing pending will be answered.
    void control.closed.then(() => {
      for (const [id, p] of staging) {
        staging.delete(id);
        clearTimeout(p.timer);
        p.reject(new FerryError('TEMPORARILY_UNAVAILABLE', 'The replica lost its runtime; it is shutting down.', { retryAfterS: 1 }));
      }
    });
    control.onFrame(({ header, payload }) => {
      if (header.type !== 'staged' || typeof header.id !== 'number') return;
      const p = staging.get(header.id);
      if (p === undefined) return;
      staging.delete(header.id);
      clearTimeout(p.timer);
      const error = header.error as Partial<ErrorBody> | undefined;
      if (error !== undefined) {
        const code = typeof error.error_code === 'string' && isErrorCode(error.error_code) ? error.error_code : 'MODEL_ERROR';
        p.reject(new FerryError(code, String(error.message)));
      } else {
        p.resolve({ modelFile: String(header.modelFile), bytes: payload });
      }
    });
  }
  const id = ++stageSeq;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      staging.delete(id);
      reject(new FerryError('DEADLINE_EXCEEDED', `The runtime did not stage model '${name}' version ${version} within ${STAGE_TIMEOUT_MS} ms.`));
    }, STAGE_TIMEOUT_MS);
    timer.unref();
    staging.set(id, { resolve, reject, timer });
    control.send({ type: 'stage', id, name, version } satisfies StageRequest);
  });
};
