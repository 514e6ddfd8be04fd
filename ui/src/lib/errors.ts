/**
 * What the console shows for a failed call: the API's own `{"error_code","message"}`, or, for
 * anything else (a proxy's HTML page, a crash), a short line with the status, never the body.
 */

export interface ShownError {
  /** HTTP status; 0 when the server could not be reached. */
  status: number;
  /** The API's error_code, or a stand-in (`HTTP_502`, `UNREACHABLE`). */
  code: string;
  message: string;
}

/** The API error in a response body, or a generic message naming the status. */
export function errorFromResponse(status: number, bodyText: string): ShownError {
  try {
    const body = JSON.parse(bodyText) as unknown;
    if (typeof body === 'object' && body !== null) {
      const { error_code: code, message } = body as Record<string, unknown>;
      if (typeof code === 'string' && typeof message === 'string') return { status, code, message };
    }
  } catch {
    // Not JSON: fall through to the generic message.
  }
  return { status, code: `HTTP_${status}`, message: `The server answered ${status} ${STATUS_TEXT[status] ?? ''}`.trimEnd() + ' without an error message.' };
}

/** A failure before any answer (network down, server stopped). */
export function unreachable(): ShownError {
  return { status: 0, code: 'UNREACHABLE', message: 'Cannot reach the Ferry server. Is it running?' };
}

/** Whether an error means the route is not on this server (an API from a newer Ferry). */
export function isMissingRoute(e: ShownError): boolean {
  return e.status === 404 && e.code === 'ENDPOINT_NOT_FOUND';
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 409: 'Conflict', 413: 'Payload Too Large',
  429: 'Too Many Requests', 500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout',
};
