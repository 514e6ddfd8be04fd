/** Errors a runtime reports that the control plane tells apart (a leaf module: no runtime code). */
import { FerryError } from '../errors.js';

/**
 * A replica that sent its runtime something that is not a valid control message was killed
 * before it became ready (a MODEL_ERROR to the caller). The controller counts these, as it counts
 * `ReplicaExit`s with reason `protocol`, towards quarantining the served entity.
 */
export class ReplicaProtocolError extends FerryError {
  constructor(message: string) {
    super('MODEL_ERROR', message);
    this.name = 'ReplicaProtocolError';
  }
}
