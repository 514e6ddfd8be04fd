/**
 * Bulk registration's tar body (`Content-Type: application/x-tar`, src/registry/bulk-tar.ts)
 * against a real server: registration, the JSON form beside it, and every limit on hostile
 * bodies (entry count, entry size, names, total size, malformed and truncated archives), each a
 * 4xx naming the entry or field, the server answering throughout.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { familyFixture } from '../src/fixtures/index.js';
import type { FerryServer } from '../src/server/index.js';
import { TAR_END, tarEntry } from '../src/tar/index.js';
import { ADMIN_TOKEN, request, startTestServer, tempDir } from './support/index.js';

let dir: string;
let server: FerryServer;
/** The server's limits in this file: small, so that hostile bodies stay small. */
const MAX_UPLOAD_BYTES = 64 * 1024;
const MAX_BODY_BYTES = 6 * 1024 * 1024;
const BULK = '/api/2.0/mlflow/model-versions/bulk-create';

const tar = (entries: Array<[string, Uint8Array]>): Buffer => Buffer.concat([...entries.flatMap(([p, c]) => tarEntry(p, c)), TAR_END]);
const postTar = (body: Buffer) => request({ url: server.url, method: 'POST', path: BULK, headers: { 'content-type': 'application/x-tar' }, body });

before(async () => {
  dir = await tempDir();
  server = await startTestServer(path.join(dir, 'data'), { maxUploadSize: MAX_UPLOAD_BYTES, maxBodySize: MAX_BODY_BYTES });
});

after(async () => {
  await server.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

test('a tar body registers its <name>/<file> entries in archive order; a bad model fails alone; the JSON form still works', async () => {
  const r = await postTar(tar([
    ['t-0/model.onnx', familyFixture(0).build()],
    ['t-1/model.onnx', familyFixture(1).build()],
    ['t-broken/model.onnx', Buffer.from('not a model')],
    ['t-0/model.onnx', familyFixture(2).build()],
  ]));
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.registered, 3);
  assert.deepEqual(r.json.results.map((x: { name: string; status: string; version?: string }) => [x.name, x.status, x.version]), [
    ['t-0', 'READY', '1'], ['t-1', 'READY', '1'], ['t-broken', 'FAILED_REGISTRATION', undefined], ['t-0', 'READY', '2'],
  ]);
  assert.match(r.json.results[2].message, /not an ONNX protobuf/);
  const v = await request({ url: server.url, path: '/api/2.0/mlflow/model-versions/get?name=t-0&version=2' });
  assert.equal(v.json.model_version.status, 'READY');
  assert.equal(v.json.model_version.artifact_size_bytes, familyFixture(2).build().length);
  const json = await request({ url: server.url, method: 'POST', path: BULK, json: { models: [{ name: 't-1', content_base64: Buffer.from(familyFixture(1).build()).toString('base64') }] } });
  assert.deepEqual(json.json.results, [{ name: 't-1', status: 'READY', version: '2' }]);
});

test('hostile tar bodies: each limit is a 4xx naming the entry or the limit, nothing is registered, the server answers', { timeout: 60_000 }, async () => {
  const model = familyFixture(3).build();
  const cases: Array<[string, Buffer, number, RegExp]> = [
    ['more entries than 10,000', tar(Array.from({ length: 10_001 }, (_v, i): [string, Uint8Array] => [`n-${i}/model.onnx`, new Uint8Array(0)])), 400, /'models'.*at most 10000 model files/],
    ['an entry over maxUploadBytes', tar([['big/model.onnx', Buffer.alloc(MAX_UPLOAD_BYTES + 1)]]), 413, /'big\/model\.onnx' declares 65537 bytes, more than the 65536 allowed/],
    ['three segments', tar([['a/b/model.onnx', model]]), 400, /entry 0 \('a\/b\/model\.onnx'\)/],
    ['one segment', tar([['model.onnx', model]]), 400, /entry 0 \('model\.onnx'\).*<model name>\/<file name>/],
    ['a bad model name', tar([['ok/model.onnx', model], ['-bad/model.onnx', model]]), 400, /entry 1 \('-bad\/model\.onnx'\).*a model name/],
    ['a ".." file', tar([['x/..', model]]), 400, /entry 0/],
    ['not a tar', Buffer.alloc(1024, 7), 400, /not a tar archive \(bad header checksum at byte 0\)/],
    ['a bad second header', Buffer.concat([...tarEntry('ok/model.onnx', model), Buffer.alloc(512, 1), TAR_END]), 400, /bad header checksum at byte 1536/],
    ['truncated inside an entry', Buffer.concat(tarEntry('cut/model.onnx', model)).subarray(0, 600), 400, /the archive ends inside 'cut\/model\.onnx'/],
    ['no files', TAR_END, 400, /'models'.*at least one <name>\/<file> entry/],
    ['a declared body over maxBodyBytes', tar(Array.from({ length: 100 }, (_v, i): [string, Uint8Array] => [`s-${i}/model.onnx`, Buffer.alloc(MAX_UPLOAD_BYTES)])), 413, /exceeds the limit of 6291456 bytes/],
  ];
  for (const [what, body, status, message] of cases) {
    const r = await postTar(body);
    assert.equal(r.status, status, `${what}: ${r.text}`);
    assert.match(r.json.message, message, what);
  }
  // Streamed without a Content-Length: refused once the limit passes, not after buffering it all.
  const streamed = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = http.request(`${server.url}${BULK}`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/x-tar', 'transfer-encoding': 'chunked' } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    const entry = Buffer.concat(tarEntry('s/model.onnx', Buffer.alloc(MAX_UPLOAD_BYTES)));
    let sent = 0;
    const more = (): void => {
      while (sent < 2 * MAX_BODY_BYTES) {
        sent += entry.length;
        if (!req.write(entry)) return void req.once('drain', more);
      }
      req.end();
    };
    more();
  });
  assert.equal(streamed.status, 413, streamed.text);
  const names = await request({ url: server.url, path: '/api/2.0/mlflow/registered-models/search?max_results=1000' });
  const registered = (names.json.registered_models as Array<{ name: string }>).map((m) => m.name);
  for (const n of ['ok', 'big', 'a', 'cut', 'n-0', 's-0', 's']) assert.ok(!registered.includes(n), `${n} is not registered`);
  assert.equal((await request({ url: server.url, path: '/v2/health/ready' })).status, 200);
});

test('seeded mutations of a valid tar body: never a 5xx, and the server keeps answering', { timeout: 60_000 }, async () => {
  const valid = tar([['f-0/model.onnx', familyFixture(0).build()], ['f-1/model.onnx', familyFixture(1).build()]]);
  let seed = 23;
  const next = (n: number): number => {
    seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
    return seed % n;
  };
  for (let i = 0; i < 150; i++) {
    const body = Buffer.from(valid.subarray(0, i % 5 === 0 ? next(valid.length) : valid.length));
    for (let k = 0; k < 1 + next(8); k++) if (body.length > 0) body[next(body.length)] = next(256);
    const r = await postTar(body);
    assert.ok(r.status < 500, `mutation ${i}: ${r.status} ${r.text.slice(0, 300)}`);
    if (r.status === 200) for (const x of r.json.results) assert.ok(x.status === 'READY' || (x.status === 'FAILED_REGISTRATION' && x.message !== ''), JSON.stringify(x));
  }
  assert.equal((await request({ url: server.url, path: '/v2/health/ready' })).status, 200);
});
