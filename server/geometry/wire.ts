import type { MessageInitShape } from "@bufbuild/protobuf";
import type { GeometricEvidenceSchema } from "../../gen/nose_embedder_pb.js";
import type { GeometryEvidence } from "../../shared/geometry/index.js";

/** A response's `geometry` field; absent when the decision ran without geometry. */
export function geometryField(g: GeometryEvidence | undefined): { geometry?: MessageInitShape<typeof GeometricEvidenceSchema> } {
  if (g === undefined) return {};
  return {
    geometry: g.checked
      ? { checked: true, inliers: g.inliers, score: g.inlierRatio, requiredInliers: g.required, supported: g.supported, probeKeypoints: g.probeKeypoints, note: "" }
      : { checked: false, note: g.reason },
  };
}
