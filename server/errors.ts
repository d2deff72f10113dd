import { MLErrorCode } from "../gen/nose_embedder_pb.js";

/**
 * Every failure the service reports is an MLError: a protocol code plus a
 * message meant for the caller. Modules throw these; only `toWireError` turns
 * them (and anything unexpected) into the in-band fields of a response.
 */
export class MLError extends Error {
  constructor(
    readonly code: MLErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "MLError";
  }
}

export const invalidImage = (msg: string, cause?: unknown) => new MLError(MLErrorCode.INVALID_IMAGE, msg, { cause });
export const imageTooLarge = (msg: string) => new MLError(MLErrorCode.IMAGE_TOO_LARGE, msg);
export const invalidImageFormat = (msg: string) => new MLError(MLErrorCode.INVALID_IMAGE_FORMAT, msg);
export const vectorNotFound = (msg: string) => new MLError(MLErrorCode.VECTOR_NOT_FOUND, msg);
export const vectorDimensionMismatch = (msg: string) => new MLError(MLErrorCode.VECTOR_DIMENSION_MISMATCH, msg);
export const invalidRequest = (msg: string) => new MLError(MLErrorCode.INVALID_REQUEST, msg);
export const modelNotLoaded = (msg: string) => new MLError(MLErrorCode.MODEL_NOT_LOADED, msg);
export const inferenceError = (msg: string, cause?: unknown) => new MLError(MLErrorCode.INFERENCE_ERROR, msg, { cause });
export const storageError = (msg: string, cause?: unknown) => new MLError(MLErrorCode.STORAGE_CONNECTION_ERROR, msg, { cause });
export const internalError = (msg: string, cause?: unknown) => new MLError(MLErrorCode.INTERNAL_SERVER_ERROR, msg, { cause });
export const serviceUnavailable = (msg: string, cause?: unknown) => new MLError(MLErrorCode.SERVICE_UNAVAILABLE, msg, { cause });

/** ML_4001..ML_4006 for client errors, ML_5001..ML_5005 for server errors. */
export function mlCodeName(code: MLErrorCode): string {
  return code <= MLErrorCode.INVALID_REQUEST ? `ML_${4001 + code}` : `ML_${5001 + code - MLErrorCode.MODEL_NOT_LOADED}`;
}

/**
 * The failures a client should send again: the server could not serve the
 * call now but will (model still loading, object store or database out of
 * reach, too busy: queue full, rate limited, a superseded replica). Client
 * errors never pass on a retry, and neither do INFERENCE_ERROR and
 * INTERNAL_SERVER_ERROR: the same input meets the same fault, so a retry only
 * hides a bug behind the caller's backoff.
 */
const RETRYABLE: ReadonlySet<MLErrorCode> = new Set([
  MLErrorCode.MODEL_NOT_LOADED,
  MLErrorCode.STORAGE_CONNECTION_ERROR,
  MLErrorCode.SERVICE_UNAVAILABLE,
]);

export function isRetryable(code: MLErrorCode): boolean {
  return RETRYABLE.has(code);
}

export interface WireError {
  success: false;
  errorMessage: string;
  errorCode: MLErrorCode;
  retryable: boolean;
}

/**
 * The one place that maps a failure to the protocol's in-band error fields.
 * Unknown throwables become INTERNAL_SERVER_ERROR without leaking their text.
 */
export function toWireError(err: unknown): WireError {
  const e = err instanceof MLError ? err : internalError("internal server error", err);
  return {
    success: false,
    errorMessage: `${mlCodeName(e.code)}: ${e.message}`,
    errorCode: e.code,
    retryable: isRetryable(e.code),
  };
}
