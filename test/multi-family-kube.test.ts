/**
 * Model families on the Kubernetes runtime (docs/multi-model.md, docs/kubernetes.md): a real
 * server with `runtime: kubernetes` against the Kubernetes API contract double, its artifacts in
 * a real S3-compatible server (s3rver). Family replicas are pods (real `ferry replica` processes on
 * their pod IPs) that start with no model and fetch each member from S3 on a miss, as the
 * gateway's request names it, verified against the version's sha256. Routing, per-model
 * permissions and the cache counters are the same as on the local runtime.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { parsePackMember } from '../src/artifacts/index.js';
import { familyFixture, FAMILY_FEATURES, mlpFixture } from '../src/fixtures/index.js';
import { float32Tensor } from '../src/fixtures/fixture.js';
import type { FerryServer } from '../src/server/index.js';
import { ADMIN_TOKEN, FERRY_BIN, request, startTestServer, tempDir, waitSettled } from './support/index.js';
import { KubeApiDouble } from './support/kube-api-double.js';
import { S3RVER_CREDENTIALS, startTestS3, type TestS3 } from './support/s3.js';

const NS = 'ferry-test';
const IMAGE = 'ferry:test';
const BUCKET = 'models';
const MODELS = 12;
const ROW = [0.5, -1.25, 2, 0.75];

let dir: string;
let s3: TestS3;
let double: KubeApiDouble;
let server: FerryServer;
let savedKubeconfig: string | undefined;

const call = (method: string, p: string, opts: { token?: string; json?: unknown; model?: string } = {}) => request({
  url: server.url, method, path: p, token: opts.token ?? ADMIN_TOKEN,
  ...(opts.json === undefined ? {} : { json: opts.json }),
  ...(opts.model === undefined ? {} : { headers: { 'x-ferry-model': opts.model } }),
});

/** Member i's answer to ROW, from its pure-JS reference. */
function expected(i: number): number {
  const out = familyFixture(i).reference({ x: float32Tensor(new Float32Array(ROW), 1, FAMILY_FEATURES) });
  return (out.y as { data: Float32Array }).data[0] as number;
}

const familyState = async (): Promise<any> => (await call('GET', '/api/2.0/serving-endpoints/ads')).json.config.served_entities[0].state.family;

before(async () => {
  dir = await tempDir('ferry-family-kube-');
  s3 = await startTestS3([BUCKET]);
  // Pods get the S3 credentials from their environment (in a cluster: the artifactStoreSecret).
  double = await KubeApiDouble.start({
    images: { [IMAGE]: [process.execPath, FERRY_BIN] },
    baseEnv: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/', AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey },
  });
  const kubeconfig = path.join(dir, 'kubeconfig.json');
  await fsp.writeFile(kubeconfig, double.kubeconfig(NS));
  savedKubeconfig = process.env.KUBECONFIG;
  process.env.KUBECONFIG = kubeconfig;
  server = await startTestServer(path.join(dir, 'data'), {
    runtime: { kind: 'kubernetes', namespace: NS, image: IMAGE },
    artifactStore: { kind: 's3', bucket: BUCKET, endpoint: s3.endpoint, forcePathStyle: true, ...S3RVER_CREDENTIALS },
  });
  const models = Array.from({ length: MODELS }, (_, i) => ({ name: `ads-${i}`, content_base64: Buffer.from(familyFixture(i).build()).toString('base64') }));
  const r = await call('POST', '/api/2.0/mlflow/model-versions/bulk-create', { json: { models } });
  assert.equal(r.json.registered, MODELS, r.text);
  // Two pods (min provisioned concurrency 8), a 1 MiB cache each.
  const created = await call('POST', '/api/2.0/serving-endpoints', {
    json: { name: 'ads', config: { served_entities: [{ name: 'family', model_family: { name_prefix: 'ads-', cache_size: '1MiB' }, min_provisioned_concurrency: 8, max_provisioned_concurrency: 8 }] } },
  });
  assert.equal(created.status, 200, created.text);
  const settled = await waitSettled(server.url, 'ads', 90_000);
  assert.equal(settled.state.ready, 'READY', JSON.stringify(settled));
});

after(async () => {
  await server?.close();
  // The pods outlive the server (as in a cluster); the double's close stops them.
  await double?.close();
  await s3?.close();
  if (savedKubeconfig === undefined) delete process.env.KUBECONFIG;
  else process.env.KUBECONFIG = savedKubeconfig;
  await fsp.rm(dir, { recursive: true, force: true });
});

test('family pods fetch each member from S3 on a miss; a model\'s requests stay on one pod', { timeout: 60_000 }, async () => {
  const pods = double.list('pods', NS).filter((p) => p.metadata.labels?.['ferry.dev/endpoint'] === 'ads');
  assert.equal(pods.length, 2, 'one pod per replica');
  const args = (pods[0]?.spec?.containers as Array<{ args: string[] }>)[0]?.args ?? [];
  assert.ok(args.includes('--members-from-store') && args.includes('--family-cache-bytes') && !args.includes('--artifact-path'), args.join(' '));
  for (let pass = 0; pass < 3; pass++) {
    for (let i = 0; i < MODELS; i++) {
      const r = await call('POST', '/serving-endpoints/ads/invocations', { model: `ads-${i}`, json: { inputs: [ROW] } });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.json, { predictions: [[expected(i)]] }, `ads-${i}`);
    }
  }
  const v2 = await call('POST', '/v2/models/ads/versions/ads-3/infer', { json: { inputs: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: ROW }] } });
  assert.equal(v2.status, 200, v2.text);
  assert.equal(v2.json.model_name, 'ads-3');
  const family = await familyState();
  assert.equal(family.replicas.length, 2, JSON.stringify(family));
  // Each model was fetched once, by its home pod; every later request was a hit there.
  assert.equal(family.loads, MODELS, JSON.stringify(family));
  assert.equal(family.load_failures, 0);
  assert.equal(family.replicas.reduce((a: number, r: { models_loaded: number }) => a + r.models_loaded, 0), MODELS, JSON.stringify(family));
  assert.ok(family.replicas.every((r: { models_loaded: number }) => r.models_loaded > 0), `both pods hold models: ${JSON.stringify(family)}`);
  assert.equal(family.hits, 2 * MODELS + 1);
});

test('per-model permissions and membership apply as on one machine', { timeout: 30_000 }, async () => {
  assert.equal((await call('POST', '/api/2.0/principals', { json: { name: 'analyst', type: 'USER' } })).status, 200);
  const t = await call('POST', '/api/2.0/token-management/on-behalf-of/tokens', { json: { principal: 'analyst', comment: 'test' } });
  const token = t.json.token_value as string;
  assert.equal((await call('PATCH', '/api/2.0/permissions/serving-endpoints/ads', { json: { access_control_list: [{ user_name: 'analyst', permission_level: 'CAN_QUERY' }] } })).status, 200);
  const denied = await call('POST', '/serving-endpoints/ads/invocations', { token, model: 'ads-1', json: { inputs: [ROW] } });
  assert.equal(denied.status, 403, denied.text);
  assert.match(denied.json.message, /CAN_READ on registered model 'ads-1'/);
  assert.equal((await call('PATCH', '/api/2.0/permissions/registered-models/ads-1', { json: { access_control_list: [{ user_name: 'analyst', permission_level: 'CAN_READ' }] } })).status, 200);
  assert.deepEqual((await call('POST', '/serving-endpoints/ads/invocations', { token, model: 'ads-1', json: { inputs: [ROW] } })).json, { predictions: [[expected(1)]] });
  const unknown = await call('POST', '/serving-endpoints/ads/invocations', { model: 'ads-999', json: { inputs: [ROW] } });
  assert.equal(unknown.status, 404, unknown.text);
});

test('a member changed in S3 after registration is refused by the pod (sha256); one larger than the cache is a 400; others keep serving', { timeout: 60_000 }, async () => {
  const added = await call('POST', '/api/2.0/mlflow/model-versions/bulk-create', {
    json: {
      models: [
        { name: 'ads-tampered', content_base64: Buffer.from(familyFixture(20).build()).toString('base64') },
        { name: 'ads-big', content_base64: Buffer.from(mlpFixture([64, 1024, 256, 8], 'model.onnx').build()).toString('base64') },
      ],
    },
  });
  assert.equal(added.json.registered, 2, added.text);
  // Replace the tampered member's file in the bucket behind Ferry's back.
  const client = new S3Client({ region: 'us-east-1', endpoint: s3.endpoint, forcePathStyle: true, credentials: S3RVER_CREDENTIALS });
  try {
    // Its bytes are a range of the call's pack (packs/<uuid>): one byte of them flipped.
    const member = parsePackMember((await server.store.getModelVersion('ads-tampered', 1))?.artifact?.path ?? '');
    assert.ok(member !== undefined);
    const got = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: member.pack }));
    const pack = Buffer.from(await got.Body?.transformToByteArray() ?? []);
    pack.writeUInt8(pack.readUInt8(member.offset + member.length - 1) ^ 0xff, member.offset + member.length - 1);
    await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: member.pack, Body: pack }));
  } finally {
    client.destroy();
  }
  const tampered = await call('POST', '/serving-endpoints/ads/invocations', { model: 'ads-tampered', json: { inputs: [ROW] } });
  assert.equal(tampered.status, 500, tampered.text);
  assert.match(tampered.json.message, /does not match its recorded sha256: expected [0-9a-f]{64}, found [0-9a-f]{64}/);
  const big = await call('POST', '/serving-endpoints/ads/invocations', { model: 'ads-big', json: { inputs: [Array(64).fill(0)] } });
  assert.equal(big.status, 400, big.text);
  assert.match(big.json.message, /Model 'ads-big\/1' needs \d+ bytes, more than a replica's whole model cache \(model_family.cache_size 1048576 bytes\)/);
  assert.deepEqual((await call('POST', '/serving-endpoints/ads/invocations', { model: 'ads-4', json: { inputs: [ROW] } })).json, { predictions: [[expected(4)]] });
  assert.equal((await familyState()).load_failures, 2, 'both refused loads are counted');
});
