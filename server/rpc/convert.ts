import type { MessageInitShape } from "@bufbuild/protobuf";
import { Verdict, type ClientEmbedding, type GeometricEvidenceSchema, type NosePhoto } from "../../gen/nose_embedder_pb.js";
import type { GeometryEvidence } from "../../shared/geometry/index.js";
import type { MatchVerdict } from "../../shared/similarity.js";
import { invalidRequest } from "../errors.js";
import type { ClientVector } from "../registry/client-parity.js";
import type { MatchScores, PhotoInput } from "../registry/types.js";

const VERDICT: Record<MatchVerdict, Verdict> = { SAME: Verdict.SAME, REVIEW: Verdict.REVIEW, DIFFERENT: Verdict.DIFFERENT };

/** A request's photo, given inline or by key. */
export function photoInput(photo: NosePhoto | undefined): PhotoInput {
  switch (photo?.source.case) {
    case "imageData":
      return { bytes: photo.source.value };
    case "imageKey":
      return { key: photo.source.value };
    default:
      throw invalidRequest("photo is required: set image_data or image_key");
  }
}

/** A request's optional client embedding. */
export function clientVector(c: ClientEmbedding | undefined): ClientVector | undefined {
  return c ? { vector: c.vector, executionProvider: c.executionProvider, modelVersion: c.modelVersion } : undefined;
}

/** The score fields every registry response carries, from a flow's result. */
export function scoreFields(r: MatchScores) {
  return {
    similarity: r.similarity,
    cosineSimilarity: r.cosineSimilarity,
    euclideanDistance: r.euclideanDistance,
    verdict: VERDICT[r.verdict],
    ...geometryField(r.geometry),
  };
}

/** A flow's optional client agreement as the response's optional field. */
export function agreementField(value: number | undefined): { clientAgreement?: number } {
  return value === undefined ? {} : { clientAgreement: value };
}

/** A response's `geometry` field; absent when the decision ran without geometry. */
export function geometryField(g: GeometryEvidence | undefined): { geometry?: MessageInitShape<typeof GeometricEvidenceSchema> } {
  if (g === undefined) return {};
  return {
    geometry: g.checked
      ? {
          checked: true,
          inliers: g.inliers,
          score: g.inlierRatio,
          requiredInliers: g.required,
          supported: g.supported,
          probeKeypoints: g.probeKeypoints,
          note: "",
        }
      : { checked: false, note: g.reason },
  };
}
