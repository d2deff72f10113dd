import { MLErrorCode } from "../../gen/nose_embedder_pb.js";
import { cosine } from "../../shared/similarity.js";
import { MLError, invalidRequest } from "../errors.js";

/**
 * Client embeddings: a caller (the browser capture app) may send the vector
 * it computed on its device with the model this server serves. The server
 * stays authoritative: it embeds every photo itself and only compares. A
 * client vector must name the running model's version, have the model's
 * length and finite values, and agree with the server's embedding of the
 * same photo to within the parity bound; otherwise the request is refused
 * before anything is written.
 */

/** Cosine a client vector must reach against the server's own embedding. */
export const DEFAULT_CLIENT_PARITY_MIN_COSINE = 0.999;

const MAX_PROVIDER_LENGTH = 64;
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

export interface ClientVector {
  vector: ArrayLike<number>;
  /** e.g. "webgpu", "wasm"; "" when the caller did not say. */
  executionProvider?: string;
  modelVersion: string;
}

/** What the audit row's detail records about accepted client vectors. */
export interface ClientAgreement {
  /** The lowest cosine over the given vectors. */
  agreement: number;
  /** Per photo, in request order. */
  cosines: number[];
  /** The distinct execution providers named, in request order ("" when none was). */
  executionProvider: string;
  modelVersion: string;
}

/** A client vector that disagrees with the server's: INVALID_REQUEST carrying the cosine. */
export class ClientDisagreementError extends MLError {
  constructor(
    readonly agreement: number,
    readonly bound: number,
    label?: string,
  ) {
    super(
      MLErrorCode.INVALID_REQUEST,
      `${label ? `${label}: ` : ""}client embedding disagrees with the server's (cosine ${below(agreement, bound)} < ${bound})`,
    );
    this.name = "ClientDisagreementError";
  }

  /** A refusal because a client embedding disagreed still reports the measured agreement. */
  responseFields() {
    return { clientAgreement: this.agreement };
  }
}

/** The cosine with as few decimals as show it under the bound (0.998, not a rounded 0.999). */
function below(value: number, bound: number): string {
  let digits = 3;
  while (digits < 9 && Number(value.toFixed(digits)) >= bound) digits++;
  return value.toFixed(digits);
}

const shown = (s: string) => JSON.stringify(s.length > 80 ? `${s.slice(0, 80)}...` : s);

/**
 * Request-level checks, before any photo is embedded: the model version, the
 * length and finiteness of each vector, the provider's text. `labels` name
 * the vectors in messages ("photo 2"); one label per vector.
 */
export function checkClientVectors(vectors: ClientVector[], labels: string[], modelVersion: string, dim: number): void {
  vectors.forEach((c, i) => {
    const at = labels[i] ? `${labels[i]}: ` : "";
    const version = typeof c?.modelVersion === "string" ? c.modelVersion : "";
    if (version !== modelVersion) {
      throw invalidRequest(
        `${at}client embedding was computed with model version ${shown(version)}, but the server runs ${shown(modelVersion)}; fetch the current model and embed again`,
      );
    }
    const v = c.vector;
    if (!v || typeof v.length !== "number" || v.length !== dim) {
      throw invalidRequest(`${at}client embedding has ${v?.length ?? 0} values, the model gives ${dim}`);
    }
    for (let k = 0; k < v.length; k++) {
      if (typeof v[k] !== "number" || !Number.isFinite(v[k]))
        throw invalidRequest(`${at}client embedding value ${k} is not a finite number`);
    }
    const p = c.executionProvider ?? "";
    if (typeof p !== "string" || p.length > MAX_PROVIDER_LENGTH || CONTROL.test(p)) {
      throw invalidRequest(`${at}execution provider must be text of at most ${MAX_PROVIDER_LENGTH} characters without control characters`);
    }
  });
}

/**
 * Compares each client vector with the server's embedding of the same photo
 * (already checked by checkClientVectors). Throws ClientDisagreementError for
 * the lowest cosine when it is under `bound`.
 */
export function clientAgreement(vectors: ClientVector[], server: Float32Array[], labels: string[], bound: number): ClientAgreement {
  const cosines = vectors.map((c, i) => {
    const s = cosine(c.vector, server[i]);
    // A zero vector has no direction: it agrees with nothing.
    return Number.isFinite(s) ? s : -1;
  });
  let worst = 0;
  cosines.forEach((s, i) => s < cosines[worst] && (worst = i));
  const agreement = cosines[worst];
  if (agreement < bound) throw new ClientDisagreementError(agreement, bound, vectors.length > 1 ? labels[worst] : undefined);
  const providers = [...new Set(vectors.map((c) => c.executionProvider ?? ""))];
  return { agreement, cosines, executionProvider: providers.join(","), modelVersion: vectors[0].modelVersion };
}
