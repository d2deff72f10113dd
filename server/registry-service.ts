import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  ApproveTransferResponseSchema,
  IdentifyPetResponseSchema,
  RegisterPetResponseSchema,
  SetTrainingConsentResponseSchema,
  Verdict,
  VerifyPetResponseSchema,
  type ApproveTransferRequest,
  type ClientEmbedding,
  type ApproveTransferResponse,
  type IdentifyPetRequest,
  type IdentifyPetResponse,
  type NosePhoto,
  type RegisterPetRequest,
  type RegisterPetResponse,
  type SetTrainingConsentRequest,
  type SetTrainingConsentResponse,
  type VerifyPetRequest,
  type VerifyPetResponse,
} from "../gen/nose_embedder_pb.js";
import type { MatchVerdict } from "../shared/similarity.js";
import type { Config } from "./config.js";
import { openDatabase, type Database, type DatabaseConfig } from "./db/database.js";
import { observeDatabase, type DatabaseOperation } from "./db/observed-database.js";
import { migrate } from "./db/migrations.js";
import type { EmbedImage } from "./embed-image.js";
import { invalidRequest, serviceUnavailable } from "./errors.js";
import type { Logger } from "./log.js";
import type { LoadedModel, ModelHolder } from "./model/model-holder.js";
import {
  createFlows,
  DuplicatePetError,
  InconsistentPhotosError,
  setTrainingConsent,
  type CompareResult,
  type Flows,
  type MatchScores,
  type PhotoInput,
  type ReembedReport,
} from "./registry/flows.js";
import { ClientDisagreementError, type ClientVector } from "./registry/client-parity.js";
import { createRegistry, type Registry } from "./registry/registry.js";
import { createFolderStore } from "./storage/folder-store.js";
import type { ObjectStore } from "./storage/object-store.js";
import { observeStore, type StoreOperation } from "./storage/observed-store.js";
import { createS3Store } from "./storage/s3-store.js";
import { inBand } from "./service.js";
import { geometryField } from "./geometry/wire.js";
import { createGeometryService, type GeometryService } from "./geometry/geometry-service.js";
import { createGeometricCheck, type GeometricCheck } from "./registry/geometric-check.js";

export interface RegistryHandlers {
  compareWithStoredImage(req: { imageKey: string; petDid: string }): Promise<CompareResult>;
  registerPet(req: RegisterPetRequest): Promise<RegisterPetResponse>;
  verifyPet(req: VerifyPetRequest): Promise<VerifyPetResponse>;
  identifyPet(req: IdentifyPetRequest): Promise<IdentifyPetResponse>;
  approveTransfer(req: ApproveTransferRequest): Promise<ApproveTransferResponse>;
  setTrainingConsent(req: SetTrainingConsentRequest): Promise<SetTrainingConsentResponse>;
  /** One line for health messages: the registry database's state as last seen. */
  status(): string;
  /**
   * Whether the registry RPCs can be served now: the database open, migrated
   * and answering a bounded round trip (checked at most once a second), and
   * this server's model version not superseded by a rollout.
   */
  readiness(): Promise<{ ready: boolean; detail: string }>;
  /** Called when the database becomes ready. */
  onChange(listener: () => void): () => void;
  /** Pets per status and embeddings per model version; SERVICE_UNAVAILABLE while the database is. */
  counts(): Promise<{ pets: Record<string, number>; embeddings: Record<string, number> }>;
  close(): Promise<void>;
}

/** How long a readiness answer is reused, and how long its round trip may take. */
const READINESS_TTL_MS = 1000;
const READINESS_TIMEOUT_MS = 1000;
/** When another replica holds the re-embedding lock, look again after this long (it may die halfway). */
const SWEEP_RETRY_MS = 5000;

const VERDICT: Record<MatchVerdict, Verdict> = { SAME: Verdict.SAME, REVIEW: Verdict.REVIEW, DIFFERENT: Verdict.DIFFERENT };

/** The score fields every registry response carries, from a flow's result. */
const scoreFields = (r: MatchScores) => ({
  similarity: r.similarity,
  cosineSimilarity: r.cosineSimilarity,
  euclideanDistance: r.euclideanDistance,
  verdict: VERDICT[r.verdict],
  ...geometryField(r.geometry),
});

function photoInput(photo: NosePhoto | undefined): PhotoInput {
  switch (photo?.source.case) {
    case "imageData":
      return { bytes: photo.source.value };
    case "imageKey":
      return { key: photo.source.value };
    default:
      throw invalidRequest("photo is required: set image_data or image_key");
  }
}

function clientVector(c: ClientEmbedding | undefined): ClientVector | undefined {
  return c ? { vector: c.vector, executionProvider: c.executionProvider, modelVersion: c.modelVersion } : undefined;
}

/** A flow's optional client agreement as the response's optional field. */
const agreementField = (value: number | undefined) => (value === undefined ? {} : { clientAgreement: value });

/** A refusal because a client embedding disagreed still reports the measured agreement. */
const refusedAgreement = (e: unknown) => (e instanceof ClientDisagreementError ? e.agreement : undefined);

/** The object store the configuration names: S3 when NCP_ENDPOINT is set, else the local folder. */
export function openObjectStore(config: Config): ObjectStore {
  return config.s3
    ? createS3Store({
        ...config.s3,
        operationTimeoutMs: config.storageTimeoutMs,
        connectTimeoutMs: config.storageConnectTimeoutMs,
        maxAttempts: config.storageMaxAttempts,
      })
    : createFolderStore({ root: config.objectDir });
}

/** The database the configuration names: PostgreSQL when DB_HOST is set, else PGlite in its folder. */
export function databaseConfig(config: Config, onError?: (e: Error) => void): DatabaseConfig {
  return config.pg
    ? {
        kind: "postgres",
        host: config.pg.host,
        port: config.pg.port,
        username: config.pg.user,
        password: config.pg.password,
        database: config.pg.database,
        max: config.dbPoolMax,
        connectTimeoutMs: config.dbConnectTimeoutMs,
        queryTimeoutMs: config.dbTimeoutMs,
        idleTimeoutMs: config.dbIdleTimeoutMs,
        onError,
      }
    : { kind: "pglite", dataDir: config.pgliteDir };
}

/**
 * Opens the object store and the database and serves the registry RPCs on
 * them. The database may be down when the server starts: it is then retried
 * in the background while these RPCs answer SERVICE_UNAVAILABLE (retryable),
 * and ExtractNoseVector keeps working.
 */
/** Told of every failed object-store operation and database query (for metrics). */
export interface RegistryFailureHooks {
  storageError?(op: StoreOperation, err: unknown): void;
  databaseError?(op: DatabaseOperation, err: unknown): void;
}

export function openRegistry(config: Config, model: ModelHolder, embed: EmbedImage, log: Logger, hooks: RegistryFailureHooks = {}): RegistryHandlers {
  // Observed: time booked to the calls' storage / database stages, failures to the hooks.
  const store = observeStore(openObjectStore(config), hooks.storageError);

  let db: Database | undefined;
  let registry: Registry | undefined;
  let lastError = "connecting";
  let closed = false;
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  const listeners = new Set<() => void>();

  const connect = async (attempt: number): Promise<void> => {
    try {
      const opened = await openDatabase(databaseConfig(config, (e) => log.warn("database connection dropped", { err: e })));
      try {
        const applied = await migrate(opened);
        if (closed) return void (await opened.close());
        db = opened;
        registry = createRegistry(observeDatabase(opened, hooks.databaseError), { efSearch: config.hnswEfSearch });
        log.info("database ready", { kind: opened.kind, migrationsApplied: applied });
        listeners.forEach((l) => l());
        onModel();
      } catch (e) {
        await opened.close().catch(() => undefined);
        throw e;
      }
    } catch (e) {
      lastError = (e as Error).message;
      const delay = Math.min(30_000, 500 * 2 ** Math.min(attempt, 6));
      log.error("database not ready, retrying", { err: e, retryInMs: delay });
      if (!closed) retryTimer = setTimeout(() => void connect(attempt + 1), delay);
    }
  };
  // A model version is adopted by the registry when a server first runs it
  // (a rollout); then enrolled embeddings of other versions are re-embedded
  // from their stored images in the background, one replica at a time
  // (verification re-embeds a pet's rows on demand meanwhile).
  let adoptedFor: LoadedModel | undefined;
  let sweepTimer: ReturnType<typeof setTimeout> | undefined;
  const onModel = () => {
    const state = model.state();
    if (closed || !registry || state.status !== "ready" || adoptedFor === state.model) return;
    const m = state.model;
    adoptedFor = m;
    clearTimeout(sweepTimer);
    registry.adoptModelVersion(m.version).then(
      () => sweep(m),
      (e) => {
        adoptedFor = undefined;
        log.warn("adopting the model version failed; will retry", { err: e, modelVersion: m.version, retryInMs: SWEEP_RETRY_MS });
        if (!closed) sweepTimer = setTimeout(onModel, SWEEP_RETRY_MS);
      },
    );
  };
  model.onChange(onModel);

  const isCurrent = (m: LoadedModel) => {
    const state = model.state();
    return !closed && state.status === "ready" && state.model === m;
  };
  const sweep = (m: LoadedModel) => {
    const reg = registry;
    if (!reg || !isCurrent(m)) return;
    const retry = () => {
      if (isCurrent(m)) sweepTimer = setTimeout(() => sweep(m), SWEEP_RETRY_MS);
    };
    model
      .pinned(async () => {
        const later = await reg.supersededBy(m.version);
        if (later !== undefined) {
          log.warn("the registry has moved to a later model version; this server does not re-embed", { modelVersion: m.version, registryModelVersion: later });
          return;
        }
        const outcome = await reg.withSweepLock(() => flows().migrateStale({ keepGoing: () => isCurrent(m) }));
        if (!outcome.ran) {
          log.info("re-embedding sweep is running on another replica", { modelVersion: m.version, retryInMs: SWEEP_RETRY_MS });
          return retry();
        }
        logSweep(outcome.result, m.version);
      })
      .catch((e) => {
        log.warn("re-embedding stale embeddings failed; will retry", { err: e, retryInMs: SWEEP_RETRY_MS });
        retry();
      });
  };
  const logSweep = (r: ReembedReport, version: string) => {
    if (r.embeddings > 0) log.info("embeddings re-embedded", { count: r.embeddings, pets: r.pets, from: r.from, modelVersion: version });
    if (r.missing.length > 0) {
      log.warn("enrolled photos missing or unreadable; their embeddings stay on the earlier model", { count: r.missing.length, missing: r.missing.slice(0, 20) });
    }
  };

  const ready = connect(0);

  // One geometry worker per detector setting (models normally share one),
  // and one geometric check per model, which keeps its enrolled keypoints.
  const geometryServices = new Map<string, GeometryService>();
  const geometricCheckFor = (m: LoadedModel): GeometricCheck => {
    const key = JSON.stringify(m.geometry.params);
    let service = geometryServices.get(key);
    if (!service) {
      service = createGeometryService(m.geometry.params, { maxBytes: config.maxImageBytes, maxPixels: config.maxImagePixels });
      geometryServices.set(key, service);
    }
    return createGeometricCheck({ geometry: service, policy: m.geometry.policy, store, log: (event, fields) => log.info(event, fields) });
  };

  // One Flows per loaded model: it keeps per-process state (the last
  // verify_{ms} timestamp handed out), so it must outlive a request.
  let cached: { model: LoadedModel; flows: Flows } | undefined;
  const flows = (): Flows => {
    const m = model.require();
    if (!registry) throw serviceUnavailable(`registry database is not available: ${lastError}`);
    if (cached?.model !== m) {
      cached = {
        model: m,
        flows: createFlows({
          store,
          registry,
          embed,
          calibration: m.calibration,
          modelVersion: m.version,
          ...(config.geometry ? { geometry: geometricCheckFor(m) } : {}),
          clientParityMinCosine: config.clientParityMinCosine,
          log: (event, fields) => log.info(event, fields),
        }),
      };
    }
    return cached.flows;
  };

  // Readiness: one bounded round trip at a time, its answer reused for a
  // second, so probes and tight health polling cost the database little.
  let probe: { at: number; key: string; answer: Promise<{ ready: boolean; detail: string }> } | undefined;
  let probing = false;
  const check = async (reg: Registry, version: string | undefined): Promise<{ ready: boolean; detail: string }> => {
    probing = true;
    const query = (version === undefined ? reg.ping().then(() => undefined) : reg.supersededBy(version)).finally(() => (probing = false));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${READINESS_TIMEOUT_MS} ms`)), READINESS_TIMEOUT_MS);
    });
    try {
      const later = await Promise.race([query, timeout]);
      if (later !== undefined) return { ready: false, detail: `the registry has moved to model version ${later}; this server runs ${version}` };
      return { ready: true, detail: `registry on ${db!.kind}` };
    } catch (e) {
      return { ready: false, detail: `registry database not answering: ${(e as Error).message}` };
    } finally {
      clearTimeout(timer);
    }
  };
  const readiness = () => {
    const reg = registry;
    if (!reg) return Promise.resolve({ ready: false, detail: `registry database unavailable (${lastError})` });
    const state = model.state();
    const key = state.status === "ready" ? state.model.version : "";
    const now = performance.now();
    if (probe && probe.key === key && now - probe.at < READINESS_TTL_MS) return probe.answer;
    // A round trip still waiting past its time: the database is not answering; do not pile up more.
    if (probing) return Promise.resolve({ ready: false, detail: "registry database not answering (a check is still waiting)" });
    probe = { at: now, key, answer: check(reg, key || undefined) };
    return probe.answer;
  };

  return {
    compareWithStoredImage: (req) => flows().compareWithStoredImage(req),

    async registerPet(req) {
      let duplicate: DuplicatePetError | undefined;
      let inconsistent: InconsistentPhotosError | undefined;
      let refused: number | undefined;
      const res = await inBand("RegisterPet", log, async () => {
        try {
          const r = await flows().registerPet({
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
        } catch (e) {
          if (e instanceof DuplicatePetError) duplicate = e;
          if (e instanceof InconsistentPhotosError) inconsistent = e;
          refused = refusedAgreement(e);
          throw e;
        }
      });
      return create(RegisterPetResponseSchema, {
        ...res,
        ...(duplicate ? { duplicatePetDid: duplicate.existingPetDid, duplicateSimilarity: duplicate.similarity } : {}),
        ...(inconsistent ? { minPairSimilarity: inconsistent.similarity } : {}),
        ...(inconsistent?.geometry ? { minPairInliers: inconsistent.geometry.inliers } : {}),
        ...agreementField(refused),
      });
    },

    async verifyPet(req) {
      let refused: number | undefined;
      const res = await inBand("VerifyPet", log, async () => {
        const r = await flows()
          .verifyPet({ petDid: req.petDid, photo: photoInput(req.photo), requestedBy: req.requestedBy, clientEmbedding: clientVector(req.clientEmbedding) })
          .catch((e) => {
            refused = refusedAgreement(e);
            throw e;
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
      return create(VerifyPetResponseSchema, { ...res, ...agreementField(refused) });
    },

    async identifyPet(req) {
      let refused: number | undefined;
      const res = await inBand("IdentifyPet", log, async () => {
        const r = await flows()
          .identifyPet({ photo: photoInput(req.photo), topK: req.topK, minSimilarity: req.minSimilarity, clientEmbedding: clientVector(req.clientEmbedding) })
          .catch((e) => {
            refused = refusedAgreement(e);
            throw e;
          });
        return {
          success: true,
          matches: r.matches.map((m) => ({
            petDid: m.petDid,
            ...scoreFields(m),
          })),
          modelVersion: r.modelVersion,
          ...agreementField(r.clientAgreement),
        } satisfies MessageInitShape<typeof IdentifyPetResponseSchema>;
      });
      return create(IdentifyPetResponseSchema, { ...res, ...agreementField(refused) });
    },

    async approveTransfer(req) {
      const res = await inBand("ApproveTransfer", log, async () => {
        const r = await flows().approveTransfer({
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
        if (!registry) throw serviceUnavailable(`registry database is not available: ${lastError}`);
        const state = model.state();
        const r = await setTrainingConsent(
          registry,
          { petDid: req.petDid, trainingConsent: req.trainingConsent, requestedBy: req.requestedBy, requestId: req.requestId },
          state.status === "ready" ? state.model.version : "",
        );
        if (r.recorded) log.info("consent.changed", { petDid: r.petDid, previous: r.previous, trainingConsent: r.trainingConsent, idempotencyKey: req.requestId || undefined });
        return { success: true, petDid: r.petDid, trainingConsent: r.trainingConsent } satisfies MessageInitShape<typeof SetTrainingConsentResponseSchema>;
      });
      return create(SetTrainingConsentResponseSchema, res);
    },

    status: () => (registry ? `registry on ${db!.kind}` : `registry database unavailable (${lastError})`),
    readiness,
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },

    counts() {
      if (!registry) return Promise.reject(serviceUnavailable(`registry database is not available: ${lastError}`));
      return registry.counts();
    },

    async close() {
      closed = true;
      if (retryTimer) clearTimeout(retryTimer);
      clearTimeout(sweepTimer);
      await ready;
      await db?.close();
      await Promise.all([...geometryServices.values()].map((g) => g.close()));
    },
  };
}
