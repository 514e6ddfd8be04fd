/**
 * Protocols: wire formats ↔ internal tensors. Replicas call these on the hot path with an already
 * JSON-parsed body; decoders validate it against the model's Signature and throw a 400 FerryError
 * naming the offending field, encoders turn model outputs into JSON-safe response objects.
 * Rules and examples: docs/protocols.md.
 */
export {
  decodeMlflowRequest, encodeMlflowResponse, MLFLOW_FORMATS,
  type MlflowFormat, type MlflowRequest,
} from './mlflow.js';
export {
  decodeV2Request, encodeV2Answer, encodeV2Response, v2ModelConfig, v2ModelMetadata, dtypeToV2, v2ToDtype, isV2Datatype,
  type V2Datatype, type V2Request, type V2Response, type V2ResponseOptions, type V2OutputTensor,
  type V2ModelMetadata, type V2TensorMetadata, type V2ModelConfig, type V2ConfigTensor,
} from './v2.js';
export { binaryAnswer, readBinaryAnswer, tensorBytes } from './v2-binary.js';
export { checkRowCount } from './decode.js';
export { endpointOpenApi } from './openapi.js';
export type { JsonScalar } from './encode.js';
