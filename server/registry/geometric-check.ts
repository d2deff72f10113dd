import {
  decodeFeatures,
  FeatureFileError,
  encodeFeatures,
  type GeometryEvidence,
  type GeometryPolicy,
  type NoseFeatures,
} from "../../shared/geometry/index.js";
import type { GeometryService } from "../geometry/geometry-service.js";
import { featuresKey } from "../storage/keys.js";
import type { ObjectStore } from "../storage/object-store.js";

/**
 * Keypoint geometry as the registry's use cases need it: a photo's
 * keypoints, a probe against a pet's enrolled photos, two registration
 * photos against each other, and the enrolled photos' keypoints kept beside
 * them in the store.
 *
 * Enrolled keypoints follow the rule of enrolled embeddings: made once and
 * stored (`image_N.features`), and made again from the stored photo when the
 * file is missing or was made by other detector settings (its feature-set
 * id differs), then written back. A process keeps the most recently used
 * ones in memory.
 */
export interface GeometricCheck {
  readonly policy: GeometryPolicy;
  /** A photo's keypoints, or undefined (logged) when none can be found: then it has no geometric support. */
  photo(bytes: Uint8Array): Promise<NoseFeatures | undefined>;
  /** The enrolled photos' keypoints, loaded (or made) once per decision; start it early, it overlaps the embedding. */
  enrolledOf(imageKeys: string[]): Promise<EnrolledKeypoints>;
  /** The probe against enrolled keypoints; `required` inliers make support. */
  compare(probe: NoseFeatures | undefined, enrolled: EnrolledKeypoints, required: number): Promise<GeometryEvidence>;
  /** enrolledOf + compare. */
  againstEnrolled(probe: NoseFeatures | undefined, imageKeys: string[], required: number): Promise<GeometryEvidence>;
  /** Inliers between two photos of one registration (0 when either has no keypoints). */
  pair(a: NoseFeatures | undefined, b: NoseFeatures | undefined): Promise<number>;
  /** Stores newly enrolled photos' keypoints; a failure is logged, the file is made again when next needed. */
  enrol(entries: Array<{ imageKey: string; features: NoseFeatures | undefined }>): Promise<void>;
}

/** A pet's enrolled keypoints fit for a decision, or why there are none (then the similarity decides alone). */
export type EnrolledKeypoints = { usable: NoseFeatures[] } | { usable: []; reason: string };

export interface GeometricCheckDeps {
  geometry: GeometryService;
  policy: GeometryPolicy;
  store: ObjectStore;
  log?: (event: string, fields: Record<string, unknown>) => void;
  /** Enrolled photos whose keypoints stay in memory. */
  cacheSize?: number;
}

export function createGeometricCheck(deps: GeometricCheckDeps): GeometricCheck {
  const { geometry, policy, store } = deps;
  const log = deps.log ?? (() => {});
  const cacheSize = deps.cacheSize ?? 2048;
  const cache = new Map<string, NoseFeatures>();
  const remember = (key: string, f: NoseFeatures) => {
    cache.delete(key);
    cache.set(key, f);
    if (cache.size > cacheSize) cache.delete(cache.keys().next().value!);
  };

  const photo = async (bytes: Uint8Array): Promise<NoseFeatures | undefined> => {
    try {
      return await geometry.features(bytes);
    } catch (e) {
      log("geometry.keypoints_failed", { error: (e as Error).message });
      return undefined;
    }
  };

  const write = async (imageKey: string, f: NoseFeatures) => {
    try {
      await store.put(featuresKey(imageKey), encodeFeatures(geometry.featureSetId, f), "application/octet-stream");
    } catch (e) {
      log("geometry.features_write_failed", { imageKey, error: (e as Error).message });
    }
  };

  /** An enrolled photo's keypoints: memory, then its file, then the photo itself; undefined when the photo is gone. */
  const enrolled = async (imageKey: string): Promise<NoseFeatures | undefined> => {
    const hit = cache.get(imageKey);
    if (hit) {
      remember(imageKey, hit);
      return hit;
    }
    const file = await store.get(featuresKey(imageKey));
    if (file !== undefined) {
      try {
        const stored = decodeFeatures(file);
        if (stored.featureSetId === geometry.featureSetId) {
          remember(imageKey, stored.features);
          return stored.features;
        }
      } catch (e) {
        if (!(e instanceof FeatureFileError)) throw e;
        log("geometry.features_unreadable", { imageKey, error: e.message });
      }
    }
    const bytes = await store.get(imageKey);
    if (bytes === undefined) return undefined;
    const f = await photo(bytes);
    if (!f) return undefined;
    await write(imageKey, f);
    remember(imageKey, f);
    return f;
  };

  const enrolledOf = async (imageKeys: string[]): Promise<EnrolledKeypoints> => {
    if (imageKeys.length === 0) {
      return {
        usable: [],
        reason: "the pet's enrolment photos are not on record (enrolled as a vector only); decided by similarity alone",
      };
    }
    const refs = (await Promise.all(imageKeys.map(enrolled))).filter((f): f is NoseFeatures => f !== undefined);
    const usable = refs.filter((f) => f.count >= policy.minKeypoints);
    if (usable.length > 0) return { usable };
    const most = Math.max(0, ...refs.map((f) => f.count));
    return {
      usable: [],
      reason:
        refs.length === 0
          ? "the pet's enrolment photos cannot be read; decided by similarity alone"
          : `the pet's enrolment photos show too little detail for keypoints (at most ${most}, ${policy.minKeypoints} needed); decided by similarity alone`,
    };
  };

  const compare = async (probe: NoseFeatures | undefined, set: EnrolledKeypoints, required: number): Promise<GeometryEvidence> => {
    if ("reason" in set) return { checked: false, reason: set.reason };
    const probeKeypoints = probe?.count ?? 0;
    const matches = probe ? await geometry.match(probe, set.usable) : [];
    const best = matches.reduce((x, y) => (y.inliers > x.inliers ? y : x), { inliers: 0, inlierRatio: 0, candidates: 0 });
    return {
      checked: true,
      inliers: best.inliers,
      inlierRatio: best.inlierRatio,
      candidates: best.candidates,
      probeKeypoints,
      required,
      supported: best.inliers >= required,
    };
  };

  return {
    policy,
    photo,
    enrolledOf,
    compare,
    againstEnrolled: async (probe, imageKeys, required) => compare(probe, await enrolledOf(imageKeys), required),

    async pair(a, b) {
      if (!a || !b) return 0;
      const [m] = await geometry.match(a, [b]);
      return m.inliers;
    },

    async enrol(entries) {
      await Promise.all(
        entries.map(async ({ imageKey, features }) => {
          if (!features) return;
          await write(imageKey, features);
          remember(imageKey, features);
        }),
      );
    },
  };
}
