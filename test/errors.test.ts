import assert from "node:assert/strict";
import { test } from "node:test";
import { MLErrorCode } from "../gen/nose_embedder_pb.js";
import { internalError, isRetryable, toWireError } from "../server/errors.js";

/**
 * What a client may send again. A retry of INFERENCE_ERROR or
 * INTERNAL_SERVER_ERROR meets the same fault: marking them retryable would let
 * a load test (and a gateway) retry a bug until it happens not to show.
 */
test("only unavailability is retryable: model not loaded, store or database unreachable, service busy", () => {
  const expected: Record<string, boolean> = {
    INVALID_IMAGE: false,
    IMAGE_TOO_LARGE: false,
    INVALID_IMAGE_FORMAT: false,
    VECTOR_NOT_FOUND: false,
    VECTOR_DIMENSION_MISMATCH: false,
    INVALID_REQUEST: false,
    MODEL_NOT_LOADED: true,
    INFERENCE_ERROR: false,
    STORAGE_CONNECTION_ERROR: true,
    INTERNAL_SERVER_ERROR: false,
    SERVICE_UNAVAILABLE: true,
  };
  const codes = Object.entries(MLErrorCode).filter(([, v]) => typeof v === "number") as Array<[string, MLErrorCode]>;
  assert.deepEqual(codes.map(([name]) => name).sort(), Object.keys(expected).sort(), "a new code needs a decision here");
  for (const [name, code] of codes) assert.equal(isRetryable(code), expected[name], name);
});

test("an unexpected throwable becomes INTERNAL_SERVER_ERROR, not retryable", () => {
  const wire = toWireError(new TypeError("x is undefined"));
  assert.equal(wire.errorCode, MLErrorCode.INTERNAL_SERVER_ERROR);
  assert.equal(wire.retryable, false);
  assert.equal(toWireError(internalError("boom")).retryable, false);
});
