/**
 * Getting one request to a replica of a served entity: the replica pick (in the entity's
 * traffic), the wait in its buffer, the one retry after a transport failure, the replica slot
 * held until the answer (or its stream) ends.
 */
import { FerryError } from '../errors.js';
import { ChannelError, type ChannelRequest, type ChannelResponse } from '../channel/index.js';
import type { Observation } from './events.js';
import type { Backend, EntityRoute } from './routing.js';

/**
 * Sends to a replica of `entity` with room for it, waiting in the entity's buffer when there is
 * none (scale from zero, all replicas busy). A transport failure before the request reached the
 * replica (refused, gone, the frame never written) is retried once on another replica, within the
 * entity's retry budget: a caller should not pay for a replica that died before it. A request the
 * replica had received when it died is not retried: it may be what killed it (an input that
 * drives the model past its memory limit, or into a crash), and a retry would kill the next
 * replica too. Timeouts are not retried either (they would double the load on a slow model).
 */
export async function send(entity: EntityRoute, req: ChannelRequest, timeoutMs: number, obs?: Observation, affinity?: number): Promise<ChannelResponse> {
  const traffic = entity.traffic;
  traffic.countRequest();
  let failed: Backend | undefined;
  for (let attempt = 0; ; attempt++) {
    const t0 = obs ? performance.now() : 0;
    const backend = await traffic.acquire(failed, affinity);
    if (obs) obs.queueMs += performance.now() - t0;
    let streaming = false;
    try {
      const res = await backend.channel.request(req, timeoutMs);
      traffic.markSuccess(backend);
      if (res.stream === undefined) return res;
      // A stream holds its replica slot until it ends.
      streaming = true;
      void res.stream.ended.then(() => traffic.release(backend));
      return res;
    } catch (err) {
      if (!(err instanceof ChannelError)) throw err;
      traffic.markFailure(backend);
      if (err.sent) {
        throw new FerryError('BAD_GATEWAY', `The replica stopped while it held this request (${err.message}); the request was not sent to another replica, as it may be what stopped it.`, { cause: err });
      }
      if (attempt === 1 || !traffic.tryRetry()) throw err;
      failed = backend;
    } finally {
      if (!streaming) traffic.release(backend);
    }
  }
}
