/**
 * The console's static files (src/console): only files listed at start are served, with their
 * content types, cache rules and security headers; traversal in any spelling is a 404; without a
 * build, `/` says how to make one. Then the real server: its `/` is the built console.
 */
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { after, before, test } from 'node:test';
import type { Access } from '../src/auth/index.js';
import { CONSOLE_CSP, consoleRoutes } from '../src/console/index.js';
import { listener, Router, type Handler } from '../src/http/index.js';
import { request, startTestServer, tempDir } from './support/index.js';

let dir: string;
const servers: http.Server[] = [];

/** A server with just the console routes over `buildDir`. */
async function serve(buildDir: string): Promise<string> {
  const router = new Router<Handler, Access>();
  await consoleRoutes(router, buildDir);
  const server = http.createServer(listener(router));
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

const JS = `export const x = ${JSON.stringify('y'.repeat(4000))};\n`;
let url: string;

before(async () => {
  dir = await tempDir();
  const build = path.join(dir, 'build');
  await fsp.mkdir(path.join(build, 'assets'), { recursive: true });
  await fsp.writeFile(path.join(build, 'index.html'), '<!doctype html><script type="module" src="/assets/index-abc123.js"></script>');
  await fsp.writeFile(path.join(build, 'assets', 'index-abc123.js'), JS);
  await fsp.writeFile(path.join(build, 'assets', 'index-abc123.css'), 'body{}');
  await fsp.writeFile(path.join(build, 'assets', 'logo-1.svg'), '<svg/>');
  // A secret next to the build: nothing may reach it.
  await fsp.writeFile(path.join(dir, 'secret.txt'), 'secret');
  url = await serve(build);
});

after(async () => {
  for (const s of servers) await new Promise((resolve) => s.close(resolve));
  await fsp.rm(dir, { recursive: true, force: true });
});

test('index.html and assets with their content types, cache rules and security headers', async () => {
  const index = await request({ url, path: '/', token: null });
  assert.equal(index.status, 200);
  assert.equal(index.headers['content-type'], 'text/html; charset=utf-8');
  assert.equal(index.headers['cache-control'], 'no-cache');
  assert.match(index.text, /index-abc123\.js/);
  for (const [file, type] of [['index-abc123.js', 'text/javascript; charset=utf-8'], ['index-abc123.css', 'text/css; charset=utf-8'], ['logo-1.svg', 'image/svg+xml']]) {
    const r = await request({ url, path: `/assets/${file}`, token: null });
    assert.equal(r.status, 200, file);
    assert.equal(r.headers['content-type'], type, file);
    assert.equal(r.headers['cache-control'], 'public, max-age=31536000, immutable', file);
  }
  for (const r of [index, await request({ url, path: '/assets/index-abc123.js', token: null })]) {
    assert.equal(r.headers['content-security-policy'], CONSOLE_CSP);
    assert.equal(r.headers['x-content-type-options'], 'nosniff');
    assert.equal(r.headers['x-frame-options'], 'DENY');
  }
  assert.match(CONSOLE_CSP, /default-src 'self'/);
  assert.match(CONSOLE_CSP, /script-src 'self'(;|$)/, 'no inline scripts');
  assert.doesNotMatch(CONSOLE_CSP, /unsafe/);
  const head = await request({ url, method: 'HEAD', path: '/assets/index-abc123.js', token: null });
  assert.equal(head.status, 200);
  assert.equal(head.text, '');
});

test('text files go gzipped to clients that accept it', async () => {
  const res = await new Promise<{ headers: http.IncomingHttpHeaders; body: Buffer }>((resolve, reject) => {
    http.get(`${url}/assets/index-abc123.js`, { headers: { 'accept-encoding': 'gzip, br' } }, (r) => {
      const chunks: Buffer[] = [];
      r.on('data', (c: Buffer) => chunks.push(c));
      r.on('end', () => resolve({ headers: r.headers, body: Buffer.concat(chunks) }));
    }).on('error', reject);
  });
  assert.equal(res.headers['content-encoding'], 'gzip');
  assert.equal(res.headers.vary, 'accept-encoding');
  assert.ok(res.body.length < JS.length / 4);
  assert.equal(gunzipSync(res.body).toString(), JS);
});

test('traversal, unknown files and other methods are refused', async () => {
  for (const p of [
    '/../package.json', '/%2e%2e/package.json', '/assets/../../secret.txt', '/assets/%2e%2e/%2e%2e/secret.txt', '/assets/..%2f..%2fsecret.txt',
    '/assets/..%5c..%5csecret.txt', '/assets/%2fetc%2fpasswd', '/assets//etc/passwd', '/assets/nope.js', '/index.html', '/secret.txt', '/assets/%00', '/assets/',
  ]) {
    const r = await request({ url, path: p, token: null });
    assert.equal(r.status, 404, `${p}: ${r.status} ${r.text}`);
    assert.doesNotMatch(r.text, /secret"|^secret/, p);
  }
  const put = await request({ url, method: 'PUT', path: '/assets/index-abc123.js', body: 'x', token: null });
  assert.equal(put.status, 405);
});

test('files added after the start are not served (the list is fixed at start)', async () => {
  await fsp.writeFile(path.join(dir, 'build', 'assets', 'late.js'), 'late');
  assert.equal((await request({ url, path: '/assets/late.js', token: null })).status, 404);
});

test('without a build, / says how to make one', async () => {
  const bare = await serve(path.join(dir, 'no-such-build'));
  const r = await request({ url: bare, path: '/', token: null });
  assert.equal(r.status, 404);
  assert.equal(r.json?.error_code, 'RESOURCE_DOES_NOT_EXIST');
  assert.match(r.json?.message, /web console is not built .*npm run build/);
});

test('the real server serves the built console at / without a token', async () => {
  const data = await tempDir();
  const server = await startTestServer(data);
  try {
    const r = await request({ url: server.url, path: '/', token: null });
    assert.equal(r.status, 200, `GET / on the server: ${r.text} (is ui/dist built? npm run build)`);
    assert.equal(r.headers['content-type'], 'text/html; charset=utf-8');
    assert.equal(r.headers['content-security-policy'], CONSOLE_CSP);
    const script = /src="(\/assets\/[^"]+\.js)"/.exec(r.text)?.[1];
    assert.ok(script !== undefined, 'index.html loads a bundled script');
    assert.doesNotMatch(r.text, /<script(?![^>]*\bsrc=)[^>]*>/, 'no inline script');
    const js = await request({ url: server.url, path: script, token: null });
    assert.equal(js.status, 200);
    assert.equal(js.headers['content-type'], 'text/javascript; charset=utf-8');
    assert.equal((await request({ url: server.url, path: '/api/2.0/serving-endpoints', token: null })).status, 401, 'the API still needs a token');
  } finally {
    await server.close();
    await fsp.rm(data, { recursive: true, force: true });
  }
});
