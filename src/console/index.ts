/**
 * The web console's static files, served by `ferry server` at `/` on the API's port. The app (in
 * `ui/`, built by `vite build` into `ui/dist`) is a page that calls the same REST API with the
 * token the user typed in, so these routes are public: they hand out only the bundled files.
 *
 * The files are read once, when the server starts: a request can only ever get one of the files
 * listed then, looked up by exact name, so no path a client sends reaches the file system (no
 * traversal, no symlink games, no files added later). Text files are also kept gzipped.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { access, type ServerRouter } from '../auth/index.js';
import { FerryError } from '../errors.js';
import type { Context } from '../http/index.js';

/** Where `npm run build` puts the console (this file runs as dist/src/console/index.js). */
export const CONSOLE_DIR = fileURLToPath(new URL('../../../ui/dist/', import.meta.url));

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.map': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
};

/**
 * The page may load only its own bundled scripts and styles and talk only to this server; no
 * inline scripts, no framing. `img-src data:` is for the empty favicon in index.html (it spares
 * the browser a request that would 404). Styles set from script (uPlot, Preact's `style`) go
 * through the CSSOM, which CSP does not restrict.
 */
export const CONSOLE_CSP = [
  "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "font-src 'self'",
  "connect-src 'self'", "object-src 'none'", "base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'",
].join('; ');

const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': CONSOLE_CSP,
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};

/** Vite names every file under assets/ by its content hash, so it never changes under a name. */
const IMMUTABLE = 'public, max-age=31536000, immutable';

interface StaticFile {
  body: Buffer;
  gzipped: Buffer | undefined;
  headers: Record<string, string>;
}

/**
 * Adds `GET /` (index.html) and `GET /assets/*path` (the bundle) to the router. Files are read
 * from `dir` now; without a build, `/` answers 404 with the command that makes one.
 */
export async function consoleRoutes(router: ServerRouter, dir: string = CONSOLE_DIR): Promise<void> {
  const files = await loadFiles(dir);
  const send = (ctx: Context, file: StaticFile | undefined): undefined => {
    if (file === undefined) throw new FerryError('RESOURCE_DOES_NOT_EXIST', `No console file ${ctx.path}.`);
    const gzip = file.gzipped !== undefined && /\bgzip\b/.test(String(ctx.req.headers['accept-encoding'] ?? ''));
    const body = gzip ? file.gzipped as Buffer : file.body;
    ctx.res.writeHead(200, { ...file.headers, ...(gzip ? { 'content-encoding': 'gzip' } : {}), 'content-length': String(body.length) });
    ctx.res.end(ctx.method === 'HEAD' ? undefined : body);
    return undefined;
  };
  router
    .add('GET', '/', (ctx) => {
      const index = files.get('index.html');
      if (index === undefined) {
        throw new FerryError('RESOURCE_DOES_NOT_EXIST', `The web console is not built (no index.html in ${dir}): run \`npm run build\` in the Ferry checkout, then restart the server.`);
      }
      return send(ctx, index);
    }, access.public)
    .add('GET', '/assets/*path', (ctx) => send(ctx, files.get(`assets/${ctx.params.path ?? ''}`)), access.public);
}

/** Every regular file under `dir` by its relative path with "/" separators; none when it is missing. */
async function loadFiles(dir: string): Promise<Map<string, StaticFile>> {
  const files = new Map<string, StaticFile>();
  const entries = await fsp.readdir(dir, { recursive: true, withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
  for (const e of entries) {
    if (!e.isFile()) continue;
    const abs = path.join(e.parentPath, e.name);
    const rel = path.relative(dir, abs).split(path.sep).join('/');
    const type = CONTENT_TYPES[path.extname(e.name).toLowerCase()] ?? 'application/octet-stream';
    const body = await fsp.readFile(abs);
    // Compressing tiny files or binary formats gains nothing.
    const compressible = body.length > 1024 && /^(text\/|application\/json|image\/svg)/.test(type);
    files.set(rel, {
      body,
      gzipped: compressible ? gzipSync(body, { level: 9 }) : undefined,
      headers: {
        ...SECURITY_HEADERS,
        'content-type': type,
        'cache-control': rel === 'index.html' ? 'no-cache' : IMMUTABLE,
        ...(compressible ? { vary: 'accept-encoding' } : {}),
      },
    });
  }
  return files;
}
