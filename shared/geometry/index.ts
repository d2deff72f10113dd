/**
 * Keypoint geometry of nose prints: a second factor beside the embedding.
 * Pure functions over pixels and a loaded OpenCV WebAssembly module, so the
 * server and the capture app run the same code.
 */
export { loadOpenCv, type OpenCv } from "./opencv.js";
export { checkGeometryParams, DEFAULT_GEOMETRY_PARAMS, featureSetId, type GeometryParams } from "./params.js";
export { extractFeatures, emptyFeatures, type GreyImage, type NoseFeatures } from "./features.js";
export { matchFeatures, type GeometricMatch } from "./match.js";
export { decodeFeatures, encodeFeatures, FeatureFileError, type StoredFeatures } from "./feature-file.js";
export { checkGeometryPolicy, decideVerdict, DEFAULT_GEOMETRY_POLICY, type GeometryEvidence, type GeometryPolicy } from "./decision.js";
