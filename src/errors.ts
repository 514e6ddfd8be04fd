/**
 * The one error table. Every error a user can see is a `FerryError` with a stable
 * `error_code` (the MLflow / Databricks code, so existing clients recognise it), the HTTP status it
 * maps to, and whether retrying the same request can succeed. Status codes come from this table,
 * never from matching message text.
 *
 * Wire shape, shared by every API: `{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "..."}`.
 *
 * A FerryError's message is written for the client: Ferry raised it on purpose (a MODEL_ERROR
 * carries the user's model's own message). Anything else thrown (a bug, a library's failure) is
 * `unexpected`: its message may hold internals (paths, SQL, a peer's address), so a client is
 * told only that it happened and the request id under which the full error was logged
 * (`clientError`).
 */

/** Every error code Ferry emits, with its HTTP status and retry semantics. */
export const ERROR_TABLE = {
  INVALID_PARAMETER_VALUE: { status: 400, retryable: false },
  MALFORMED_REQUEST: { status: 400, retryable: false },
  BAD_REQUEST: { status: 400, retryable: false },
  UNAUTHENTICATED: { status: 401, retryable: false },
  PERMISSION_DENIED: { status: 403, retryable: false },
  RESOURCE_DOES_NOT_EXIST: { status: 404, retryable: false },
  ENDPOINT_NOT_FOUND: { status: 404, retryable: false },
  METHOD_NOT_ALLOWED: { status: 405, retryable: false },
  RESOURCE_ALREADY_EXISTS: { status: 409, retryable: false },
  RESOURCE_CONFLICT: { status: 409, retryable: false },
  REQUEST_TIMEOUT: { status: 408, retryable: true },
  PAYLOAD_TOO_LARGE: { status: 413, retryable: false },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, retryable: false },
  REQUEST_LIMIT_EXCEEDED: { status: 429, retryable: true },
  REQUEST_HEADER_FIELDS_TOO_LARGE: { status: 431, retryable: false },
  INTERNAL_ERROR: { status: 500, retryable: false },
  MODEL_ERROR: { status: 500, retryable: false },
  NOT_IMPLEMENTED: { status: 501, retryable: false },
  BAD_GATEWAY: { status: 502, retryable: true },
  TEMPORARILY_UNAVAILABLE: { status: 503, retryable: true },
  DEADLINE_EXCEEDED: { status: 504, retryable: true },
  INSUFFICIENT_STORAGE: { status: 507, retryable: true },
} as const satisfies Record<string, { status: number; retryable: boolean }>;

export type ErrorCode = keyof typeof ERROR_TABLE;

/** The JSON body of every error response. */
export interface ErrorBody {
  error_code: ErrorCode;
  message: string;
}

export class FerryError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly retryable: boolean;
  /** Seconds a client should wait before retrying (sent as `Retry-After`), for retryable errors. */
  readonly retryAfterS: number | undefined;
  /** Not raised by Ferry on purpose (see the file comment): `toFerryError` of anything else. */
  readonly unexpected: boolean;

  constructor(code: ErrorCode, message: string, opts: { retryAfterS?: number; cause?: unknown; unexpected?: boolean } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'FerryError';
    this.code = code;
    this.status = ERROR_TABLE[code].status;
    this.retryable = ERROR_TABLE[code].retryable;
    this.retryAfterS = opts.retryAfterS;
    this.unexpected = opts.unexpected === true;
  }

  toBody(): ErrorBody {
    return { error_code: this.code, message: this.message };
  }
}

/** Whether `code` is one of Ferry's error codes (e.g. one read back from another process). */
export function isErrorCode(code: string): code is ErrorCode {
  return Object.hasOwn(ERROR_TABLE, code);
}

/** 400 naming the offending field, its value and what was expected. */
export function invalidParameter(field: string, value: unknown, expected: string): FerryError {
  return new FerryError('INVALID_PARAMETER_VALUE', `Invalid value ${describeValue(value)} for '${field}': expected ${expected}.`);
}


export function notFound(what: string): FerryError {
  return new FerryError('RESOURCE_DOES_NOT_EXIST', `${what} not found.`);
}

/** A short, safe rendering of a user-supplied value for error messages. */
export function describeValue(value: unknown): string {
  let text: string;
  try {
    text = value === undefined ? 'undefined' : typeof value === 'bigint' ? `${value}` : JSON.stringify(value) ?? typeof value;
  } catch {
    text = typeof value;
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/**
 * Any thrown value as a FerryError: FerryErrors pass through, a full disk (ENOSPC, EDQUOT: an
 * upload, an artifact copy) is a 507, everything else is an internal error.
 */
export function toFerryError(err: unknown): FerryError {
  if (err instanceof FerryError) return err;
  const message = err instanceof Error ? err.message : String(err);
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new FerryError('INSUFFICIENT_STORAGE', `No space left on the server's disk (${code}): free space on the data directory's volume, then retry.`, { cause: err });
  }
  return new FerryError('INTERNAL_ERROR', `Internal error: ${message}`, { cause: err, unexpected: true });
}

/**
 * What a client is told of `e`: `e` itself, unless it is unexpected; then a 500 that names the
 * request id under which the caller logs the full error. Example: a TypeError "Cannot read
 * properties of undefined (reading 'rows')" answers `{"error_code": "INTERNAL_ERROR", "message":
 * "Internal error (request id 4bf92f35): the details are in the server's log."}`.
 */
export function clientError(e: FerryError, requestId: string | undefined): FerryError {
  if (!e.unexpected) return e;
  return new FerryError('INTERNAL_ERROR', `Internal error${requestId === undefined || requestId === '' ? '' : ` (request id ${requestId})`}: the details are in the server's log.`);
}

