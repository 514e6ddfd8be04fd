/**
 * The console's only way to the server: a thin wrapper over fetch that sends the signed-in token,
 * and turns every failure into an `ApiError` holding what to show (the API's error_code and
 * message). The token lives in sessionStorage: it survives a reload, not the closed tab.
 */
import { errorFromResponse, unreachable, type ShownError } from './lib/errors.js';

const TOKEN_KEY = 'ferry.token';

export class ApiError extends Error {
  constructor(readonly shown: ShownError) {
    super(shown.message);
  }
}

/** Called when the server answers 401 (the token was revoked or expired): the app signs out. */
let onUnauthenticated: (e: ShownError) => void = () => undefined;
export function setUnauthenticatedHandler(fn: (e: ShownError) => void): void {
  onUnauthenticated = fn;
}

export const session = {
  token: (): string | null => sessionStorage.getItem(TOKEN_KEY),
  signIn: (token: string): void => sessionStorage.setItem(TOKEN_KEY, token),
  signOut: (): void => sessionStorage.removeItem(TOKEN_KEY),
};

/** The ShownError of anything thrown (an ApiError, or a bug: then a generic line, never a stack). */
export function shown(err: unknown): ShownError {
  if (err instanceof ApiError) return err.shown;
  return { status: 0, code: 'CONSOLE_ERROR', message: err instanceof Error ? err.message : String(err) };
}

export interface RawAnswer {
  status: number;
  text: string;
  elapsedMs: number;
  headers: Headers;
}

/** One request as is (the Query panel shows status, body and latency of any answer). */
export async function raw(method: string, path: string, body?: string, token: string | null = session.token()): Promise<RawAnswer> {
  const headers: Record<string, string> = {};
  if (token !== null) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const t0 = performance.now();
  let res: Response;
  try {
    res = await fetch(path, { method, headers, ...(body === undefined ? {} : { body }), cache: 'no-store' });
  } catch {
    throw new ApiError(unreachable());
  }
  const text = await res.text();
  return { status: res.status, text, elapsedMs: performance.now() - t0, headers: res.headers };
}

/** A JSON API call; non-2xx answers throw an ApiError with the API's message. */
export async function api<T>(method: string, path: string, body?: unknown, token?: string): Promise<T> {
  const r = await raw(method, path, body === undefined ? undefined : JSON.stringify(body), token ?? session.token());
  if (r.status < 200 || r.status >= 300) {
    const e = errorFromResponse(r.status, r.text);
    if (r.status === 401 && token === undefined) onUnauthenticated(e);
    throw new ApiError(e);
  }
  return (r.text === '' ? {} : JSON.parse(r.text)) as T;
}

/** `?a=1&b=x` from the defined values. */
export function qs(params: Record<string, string | number | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) q.set(k, String(v));
  const s = q.toString();
  return s === '' ? '' : `?${s}`;
}

/**
 * Uploads a file through the artifact proxy (`PUT /api/2.0/mlflow-artifacts/artifacts/{path}`),
 * reporting progress (0-1); XMLHttpRequest because fetch reports no upload progress.
 */
export function upload(path: string, file: Blob, onProgress: (fraction: number) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('PUT', `/api/2.0/mlflow-artifacts/artifacts/${path.split('/').map(encodeURIComponent).join('/')}`);
    const token = session.token();
    if (token !== null) xhr.setRequestHeader('authorization', `Bearer ${token}`);
    xhr.upload.onprogress = (ev) => {
      if (ev.lengthComputable) onProgress(ev.loaded / ev.total);
    };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) return resolve();
      const e = errorFromResponse(xhr.status, xhr.responseText);
      if (xhr.status === 401) onUnauthenticated(e);
      reject(new ApiError(e));
    };
    xhr.onerror = () => reject(new ApiError(unreachable()));
    xhr.send(file);
  });
}
