import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  CompareVectorsResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
  HealthCheckResponseSchema,
  NoseEmbedderService,
  NoseVectorResponseSchema,
} from "../gen/nose_embedder_pb.js";
import type { EmbedImage } from "./embed-image.js";
import { mlCodeName, toWireError, type WireError } from "./errors.js";
import { SERVICE_NAMES, type Readiness } from "./health.js";
import type { Logger } from "./log.js";
import type { ModelHolder } from "./model/model-holder.js";
import type { RegistryHandlers } from "./registry-service.js";
import { geometryField } from "./geometry/wire.js";

export interface ServiceDeps {
  model: ModelHolder;
  embedImage: EmbedImage;
  registry: RegistryHandlers;
  /** What HealthCheck reports: the same answer grpc.health.v1 gives. */
  readiness: Readiness;
  log: Logger;
}

/**
 * Runs a handler body and turns any failure into the in-band error fields the
 * gateway reads (success=false, error_message, error_code, retryable): the old
 * server never failed an RPC at the transport level, so neither do we.
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
    return wire;
  }
}

export function noseEmbedderService(deps: ServiceDeps): ServiceImpl<typeof NoseEmbedderService> {
  const { model, embedImage, log } = deps;
  return {
    async extractNoseVector(req) {
      const res = await inBand("ExtractNoseVector", log, async () => {
        const vector = await embedImage(req.imageData);
        return { success: true, vector: Array.from(vector), vectorSize: vector.length };
      });
      return create(NoseVectorResponseSchema, res);
    },

    async compareWithStoredImage(req) {
      const res = await inBand("CompareWithStoredImage", log, async () => {
        const s = await deps.registry.compareWithStoredImage({ imageKey: req.imageKey, petDid: req.petDid });
        return {
          success: true,
          similarity: s.similarity,
          cosineSimilarity: s.cosineSimilarity,
          euclideanDistance: s.euclideanDistance,
          vectorSize: s.vectorSize,
          ...geometryField(s.geometry),
        };
      });
      return create(CompareVectorsResponseSchema, res);
    },

    async healthCheck(req) {
      const timestamp = new Date().toISOString();
      if (!SERVICE_NAMES.has(req.service)) {
        return create(HealthCheckResponseSchema, {
          status: ServingStatus.SERVICE_UNKNOWN,
          message: `unknown service ${JSON.stringify(req.service)}; this server answers for NoseEmbedderService`,
          modelLoaded: String(model.state().status === "ready"),
          timestamp,
        });
      }
      // The database's state now (checked at most once a second), not as at start-up.
      const report = await deps.readiness.report();
      return create(HealthCheckResponseSchema, {
        status: report.serving ? ServingStatus.SERVING : ServingStatus.NOT_SERVING,
        message: `${report.serving ? "serving" : "not serving"}; ${report.parts.join("; ")}`,
        modelLoaded: String(model.state().status === "ready"),
        timestamp,
      });
    },

    registerPet: (req) => deps.registry.registerPet(req),
    verifyPet: (req) => deps.registry.verifyPet(req),
    identifyPet: (req) => deps.registry.identifyPet(req),
    approveTransfer: (req) => deps.registry.approveTransfer(req),
    setTrainingConsent: (req) => deps.registry.setTrainingConsent(req),
  };
}
