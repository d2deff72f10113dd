import { mlCodeName, toWireError, type WireError } from "../errors.js";
import type { Logger } from "../log.js";

/**
 * An error that reports more than the error fields: a refused registration
 * names the enrolled pet it duplicates, an inconsistent one the pair's score.
 * The error type supplies these response fields itself.
 */
export interface WithResponseFields {
  responseFields(): object;
}

function responseFieldsOf(e: unknown): object {
  const f = (e as Partial<WithResponseFields> | null | undefined)?.responseFields;
  return typeof f === "function" ? f.call(e) : {};
}

/**
 * Runs a handler body and turns any failure into the in-band error fields the
 * gateway reads (success=false, error_message, error_code, retryable), plus
 * the fields the error supplies: the old server never failed an RPC at the
 * transport level, so neither do we.
 */
export async function inBand<T extends object>(method: string, log: Logger, body: () => Promise<T>): Promise<T | WireError> {
  try {
    return await body();
  } catch (e) {
    const wire = toWireError(e);
    const fields = { method, code: mlCodeName(wire.errorCode), error: wire.errorMessage };
    if (wire.retryable) log.warn("request failed", { ...fields, err: e });
    else if (fields.code.startsWith("ML_5")) log.error("request failed", { ...fields, err: e });
    else log.info("request rejected", fields);
    return { ...wire, ...responseFieldsOf(e) };
  }
}
