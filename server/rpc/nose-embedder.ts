import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  ApproveTransferResponseSchema,
  CompareVectorsResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
  HealthCheckResponseSchema,
  IdentifyPetResponseSchema,
  NoseEmbedderService,
  NoseVectorResponseSchema,
  RegisterPetResponseSchema,
  SetTrainingConsentResponseSchema,
  VerifyPetResponseSchema,
} from "../../gen/nose_embedder_pb.js";
import type { EmbedImage } from "../embed-image.js";
import { SERVICE_NAMES, type Readiness } from "../health.js";
import type { Logger } from "../log.js";
import type { ModelHolder } from "../model/model-holder.js";
import { setTrainingConsent } from "../registry/consent.js";
import type { RegistryHost } from "../registry/host.js";
import { agreementField, clientVector, geometryField, photoInput, scoreFields } from "./convert.js";
import { inBand } from "./in-band.js";

export interface ServiceDeps {
  model: ModelHolder;
  embedImage: EmbedImage;
  registry: RegistryHost;
  /** What HealthCheck reports: the same answer grpc.health.v1 gives. */
  readiness: Readiness;
  log: Logger;
}

/**
 * Every RPC of NoseEmbedderService: the request converted to the domain's
 * values, one call down, the result converted back. Failures become in-band
 * error fields (see in-band.ts).
 */
export function noseEmbedderService(deps: ServiceDeps): ServiceImpl<typeof NoseEmbedderService> {
  const { model, embedImage, registry, log } = deps;
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
        const s = await registry.flows().compareWithStoredImage({ imageKey: req.imageKey, petDid: req.petDid });
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

    async registerPet(req) {
      const res = await inBand("RegisterPet", log, async () => {
        const r = await registry.flows().registerPet({
          photos: req.photos.map(photoInput),
          requestId: req.requestId,
          requestedBy: req.requestedBy,
          trainingConsent: req.trainingConsent ?? false,
          clientEmbeddings: req.clientEmbeddings.map((c) => clientVector(c)!),
        });
        return {
          success: true,
          petDid: r.petDid,
          vector: Array.from(r.vector),
          vectorSize: r.vectorSize,
          imageKeys: r.imageKeys,
          vectorKey: r.vectorKey,
          minPairSimilarity: r.minPairSimilarity,
          modelVersion: r.modelVersion,
          // Not duplicate_pet_did: a client may read that field alone as "refused".
          ...(r.review ? { reviewPetDid: r.review.petDid, reviewSimilarity: r.review.similarity } : {}),
          ...agreementField(r.clientAgreement),
          ...(r.minPairInliers === undefined ? {} : { minPairInliers: r.minPairInliers }),
        } satisfies MessageInitShape<typeof RegisterPetResponseSchema>;
      });
      return create(RegisterPetResponseSchema, res);
    },

    async verifyPet(req) {
      const res = await inBand("VerifyPet", log, async () => {
        const r = await registry.flows().verifyPet({
          petDid: req.petDid,
          photo: photoInput(req.photo),
          requestedBy: req.requestedBy,
          clientEmbedding: clientVector(req.clientEmbedding),
        });
        return {
          success: true,
          ...scoreFields(r),
          storedImageKey: r.storedImageKey,
          modelVersion: r.modelVersion,
          vectorSize: r.vectorSize,
          verificationId: r.verificationId,
          ...agreementField(r.clientAgreement),
        } satisfies MessageInitShape<typeof VerifyPetResponseSchema>;
      });
      return create(VerifyPetResponseSchema, res);
    },

    async identifyPet(req) {
      const res = await inBand("IdentifyPet", log, async () => {
        const r = await registry.flows().identifyPet({
          photo: photoInput(req.photo),
          topK: req.topK,
          minSimilarity: req.minSimilarity,
          clientEmbedding: clientVector(req.clientEmbedding),
        });
        return {
          success: true,
          matches: r.matches.map((m) => ({ petDid: m.petDid, ...scoreFields(m) })),
          modelVersion: r.modelVersion,
          ...agreementField(r.clientAgreement),
        } satisfies MessageInitShape<typeof IdentifyPetResponseSchema>;
      });
      return create(IdentifyPetResponseSchema, res);
    },

    async approveTransfer(req) {
      const res = await inBand("ApproveTransfer", log, async () => {
        const r = await registry.flows().approveTransfer({
          petDid: req.petDid,
          photo: photoInput(req.photo),
          fromGuardian: req.fromGuardian,
          toGuardian: req.toGuardian,
          requestId: req.requestId,
        });
        return {
          success: true,
          approved: r.approved,
          approvalId: r.approvalId,
          approvedAt: r.approvedAt,
          ...scoreFields(r),
          modelVersion: r.modelVersion,
        } satisfies MessageInitShape<typeof ApproveTransferResponseSchema>;
      });
      return create(ApproveTransferResponseSchema, res);
    },

    async setTrainingConsent(req) {
      const res = await inBand("SetTrainingConsent", log, async () => {
        // Needs no model: it answers while one is still loading (the version only labels the audit row).
        const r = await setTrainingConsent(
          registry.registry(),
          { petDid: req.petDid, trainingConsent: req.trainingConsent, requestedBy: req.requestedBy, requestId: req.requestId },
          registry.modelVersion(),
        );
        if (r.recorded)
          log.info("consent.changed", {
            petDid: r.petDid,
            previous: r.previous,
            trainingConsent: r.trainingConsent,
            idempotencyKey: req.requestId || undefined,
          });
        return { success: true, petDid: r.petDid, trainingConsent: r.trainingConsent } satisfies MessageInitShape<
          typeof SetTrainingConsentResponseSchema
        >;
      });
      return create(SetTrainingConsentResponseSchema, res);
    },
  };
}
