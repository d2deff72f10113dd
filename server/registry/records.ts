// What the registry stores and returns, and the registry's interface (registry.ts implements it in SQL).

export type AuditKind = "register" | "verify" | "transfer" | "identify" | "consent" | "reembed";

export interface NewPet {
  petDid: string;
  template: Float32Array;
  modelVersion: string;
  requestId?: string;
  requestedBy?: string;
  imageKeys: string[];
  vectorKey: string;
  minPairSimilarity: number;
  /** The guardian agreed to the photos' use for training. Default false. */
  trainingConsent?: boolean;
  /** One per enrolled photo, in photo order. */
  embeddings: Array<{ imageKey: string; embedding: Float32Array }>;
}

export interface PetRecord {
  petDid: string;
  createdAt: Date;
  modelVersion: string;
  template: Float32Array;
  status: string;
  requestId: string | null;
  imageKeys: string[];
  vectorKey: string;
  minPairSimilarity: number;
  trainingConsent: boolean;
}

export interface EmbeddingRecord {
  imageKey: string;
  embedding: Float32Array;
  modelVersion: string;
  createdAt: Date;
}

/** Best-matching enrolled embedding of one pet. */
export interface NearestPet {
  petDid: string;
  imageKey: string;
  embedding: Float32Array;
  /** pgvector's cosine distance (1 - cosine), computed in float32. */
  distance: number;
}

export interface AuditEntry {
  kind: AuditKind;
  petDid?: string;
  requestedBy?: string;
  requestId?: string;
  similarity?: number;
  cosine?: number;
  verdict?: string;
  modelVersion: string;
  detail?: Record<string, unknown>;
}

/** An audit row as stored. */
export interface AuditRecord {
  id: number;
  kind: AuditKind;
  petDid: string | null;
  requestedBy: string | null;
  requestId: string | null;
  similarity: number | null;
  cosine: number | null;
  verdict: string | null;
  modelVersion: string;
  createdAt: Date;
  detail: Record<string, unknown>;
}

export interface ConsentChange {
  petDid: string;
  /** The value before the call. */
  previous: boolean;
  /** The value after the call. */
  trainingConsent: boolean;
  /** False when a retry of the same request id found it already recorded. */
  recorded: boolean;
}

export interface PetFilter {
  /** Only pets with this consent value. */
  trainingConsent?: boolean;
  /** Only pets registered at or after this instant. */
  registeredSince?: Date;
}

export interface NewApproval {
  petDid: string;
  fromGuardian: string;
  toGuardian: string;
  similarity: number;
  cosine: number;
  cosineSimilarity: number;
  euclideanDistance: number;
  modelVersion: string;
  requestId?: string;
}

export interface ApprovalRecord extends Required<Omit<NewApproval, "requestId">> {
  approvalId: string;
  approvedAt: Date;
  requestId: string | null;
}

/** The read side of the registry, usable inside a transaction. */
export interface RegistryReader {
  findPet(petDid: string): Promise<PetRecord | undefined>;
  findPetByRequestId(requestId: string): Promise<PetRecord | undefined>;
  embeddingsOf(petDid: string): Promise<EmbeddingRecord[]>;
  /** The image keys of each pet's enrolled embeddings, in enrolment order, in one query (pets with none are absent). */
  imageKeysOf(petDids: string[]): Promise<Map<string, string[]>>;
  /**
   * Up to k active pets whose best enrolled embedding is nearest to `v` by
   * cosine, nearest first. With `modelVersion`, only embeddings made by that
   * version take part: a score across model versions means nothing.
   */
  nearestPets(v: Float32Array, k: number, modelVersion?: string): Promise<NearestPet[]>;
  /**
   * The model version the registry has moved on to since `modelVersion` was
   * adopted, or undefined when `modelVersion` is the latest adopted (or was
   * never adopted: a replica that is about to adopt it is not behind).
   */
  supersededBy(modelVersion: string): Promise<string | undefined>;
}

export interface Registry extends RegistryReader {
  /**
   * Inserts the pet, its embeddings and a 'register' audit row in one
   * transaction. `guard` runs first inside it, after a lock that serialises
   * registrations across replicas, and may throw to abort (the duplicate
   * check). Returns "exists" without writing when the DID or the request id
   * is already registered.
   */
  insertPet(pet: NewPet, audit: AuditEntry, guard?: (tx: RegistryReader) => Promise<void>): Promise<"inserted" | "exists">;
  addAudit(entry: AuditEntry): Promise<void>;
  /** Enrolled images whose embedding came from another model version, oldest first. */
  staleEmbeddings(modelVersion: string, limit: number): Promise<Array<{ petDid: string; imageKey: string; modelVersion: string }>>;
  /**
   * Replaces one enrolled image's embedding with `modelVersion`'s. Written
   * only while that version is not superseded (an old replica during a
   * rollout re-embeds in memory but must not move rows back); returns
   * whether the row was written.
   */
  replaceEmbedding(petDid: string, imageKey: string, embedding: Float32Array, modelVersion: string): Promise<boolean>;
  /**
   * Records that a server runs `modelVersion`. A version seen for the first
   * time becomes the registry's current one (a rollout); one seen before does
   * not, unless `promote` (an operator's explicit choice, as a rollback).
   * Serialised with registrations, so a registration by a replica on the
   * earlier version commits before this or sees it.
   */
  adoptModelVersion(modelVersion: string, promote?: boolean): Promise<void>;
  /**
   * Runs `fn` while holding the re-embedding lock, so one replica at a time
   * sweeps; answers `{ ran: false }` at once when another holds it. PGlite is
   * single-process and needs none.
   */
  withSweepLock<R>(fn: () => Promise<R>): Promise<{ ran: true; result: R } | { ran: false }>;
  /** A cheap round trip that fails when the database does not answer. */
  ping(): Promise<void>;
  findApproval(requestId: string): Promise<ApprovalRecord | undefined>;
  /**
   * Sets a pet's training consent and writes a 'consent' audit row (detail:
   * previous and new value) in one transaction. Undefined for an unknown pet.
   * With a request id already recorded for this pet, nothing is written.
   */
  setTrainingConsent(
    petDid: string,
    trainingConsent: boolean,
    audit: Omit<AuditEntry, "kind" | "petDid">,
  ): Promise<ConsentChange | undefined>;
  /** Pets matching the filter, oldest registration first. */
  listPets(filter?: PetFilter): Promise<PetRecord[]>;
  /** A pet's audit rows, oldest first, optionally of the given kinds only. */
  auditOf(petDid: string, kinds?: AuditKind[]): Promise<AuditRecord[]>;
  /** Records an approval and its audit row; idempotent on request id (returns the first one). */
  insertApproval(approval: NewApproval, audit: AuditEntry): Promise<ApprovalRecord>;
  /** Pets per status and enrolled embeddings per model version, for monitoring. */
  counts(): Promise<{ pets: Record<string, number>; embeddings: Record<string, number> }>;
}

export interface RegistryOptions {
  /**
   * hnsw.ef_search for nearest-pet queries; pgvector's default of 40 misses too many. Default 200: the
   * smallest that found exact search's top pet for 99% of enrolled dogs at 100k pets (bench, 1:N).
   */
  efSearch?: number;
}
