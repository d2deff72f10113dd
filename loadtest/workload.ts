import { prng } from "../test/support/images.js";
import type { NosePhotoSet } from "./nose-photo-cache.js";

export type RpcName = "ExtractNoseVector" | "RegisterPet" | "VerifyPet" | "IdentifyPet" | "ApproveTransfer";

/**
 * What a call does for the load, and so what its answer must be:
 * - register: a new dog's enrolment shots (0, 1); a success, or the duplicate
 *   answer when the same dog's `duplicate` call committed first;
 * - duplicate: the same dog again with its other shots (2, 3), sent once its
 *   registration has been sent (often while it is still in flight): exactly
 *   one of the two may create the pet, the other must name that pet;
 * - verify, identify, transfer: a registered dog's later shot, which must
 *   match it (SAME, best match, approved);
 * - extract: 512 values.
 */
export type OpKind = "register" | "duplicate" | "verify" | "identify" | "transfer" | "extract";

export const RPC_OF: Record<OpKind, RpcName> = {
  register: "RegisterPet",
  duplicate: "RegisterPet",
  verify: "VerifyPet",
  identify: "IdentifyPet",
  transfer: "ApproveTransfer",
  extract: "ExtractNoseVector",
};

export type Mix = Partial<Record<OpKind, number>>;

/** The mixed load: every flow the gateway drives. */
export const MIXED: Mix = { register: 0.15, duplicate: 0.03, verify: 0.27, identify: 0.2, transfer: 0.15, extract: 0.2 };
/** The scale-out load: enrolments and the verifications that read them, on any replica. */
export const REGISTER_VERIFY: Mix = { register: 0.1, verify: 0.9 };

export interface Op {
  index: number;
  kind: OpKind;
  rpc: RpcName;
  dog: number;
  request: Record<string, unknown>;
}

/** A registration answer as the client saw it. */
export interface RegisterAnswer {
  dog: number;
  requestId: string;
  /** Set when the call created (or, retried, repeated) a pet. */
  petDid?: string;
  /** Set when it was refused as a duplicate of this pet. */
  duplicateOf?: string;
  /** The refusal's duplicate_similarity. */
  similarity?: number;
  /** Which replica answered. */
  replica: number;
}

const photo = (bytes: Buffer) => ({ image_data: bytes, image_format: "jpeg" });

/**
 * The sequence of calls and the bookkeeping that judges their answers. Kinds
 * are drawn once from a seeded generator, so a run of a given size always
 * needs the same number of dogs; the first `warmup` calls are registrations
 * so the calls that need a registered dog find one.
 */
export class Workload {
  readonly kinds: OpKind[];
  readonly dogsNeeded: number;
  private readonly rnd: () => number;
  private nextDog = 0;
  /** Dogs whose registration has been sent and whose duplicate has not. */
  private readonly awaitingDuplicate: number[] = [];
  /** The pet each dog became, once an answer says so. */
  readonly petOf = new Map<number, string>();
  /** Which replica created each pet. */
  readonly createdOn = new Map<string, number>();
  readonly registered: number[] = [];
  readonly registerAnswers: RegisterAnswer[] = [];
  /** Approval ids answered per transfer request id. */
  readonly approvals = new Map<string, string>();
  private waiters: Array<() => void> = [];
  private registrationsSent = 0;

  constructor(
    readonly calls: number,
    mix: Mix,
    private readonly photos: () => NosePhotoSet,
    seed = 1,
    warmup = 16,
  ) {
    this.rnd = prng(seed);
    const entries = Object.entries(mix) as Array<[OpKind, number]>;
    const total = entries.reduce((s, [, w]) => s + w, 0);
    this.kinds = Array.from({ length: calls }, (_, i) => {
      if (i < warmup) return "register";
      let r = this.rnd() * total;
      for (const [kind, w] of entries) if ((r -= w) < 0) return kind;
      return entries[entries.length - 1][0];
    });
    this.dogsNeeded = this.kinds.filter((k) => k === "register").length;
  }

  /** Dogs the run needs photos of, counted before any photo is rendered. */
  static dogsFor(calls: number, mix: Mix, seed = 1, warmup = 16): number {
    return new Workload(calls, mix, () => () => Buffer.alloc(0), seed, warmup).dogsNeeded;
  }

  /** A registered dog, waiting for the first registration to be answered if need be. */
  private async registeredDog(): Promise<number> {
    while (this.registered.length === 0) await new Promise<void>((r) => this.waiters.push(r));
    return this.registered[Math.floor(this.rnd() * this.registered.length)];
  }

  /** Builds call `index`; may wait until some dog is registered. */
  async op(index: number): Promise<Op> {
    const p = this.photos();
    let kind = this.kinds[index];
    // A duplicate needs a dog whose registration went out; early on there may be none.
    if (kind === "duplicate" && this.awaitingDuplicate.length === 0) kind = "verify";
    const shot = 2 + Math.floor(this.rnd() * 2);
    const make = (dog: number, request: Record<string, unknown>): Op => ({ index, kind, rpc: RPC_OF[kind], dog, request });
    switch (kind) {
      case "register": {
        const dog = this.nextDog++;
        this.registrationsSent++;
        this.awaitingDuplicate.push(dog);
        return make(dog, { photos: [photo(p(dog, 0)), photo(p(dog, 1))], request_id: `reg-${dog}`, requested_by: `0xguardian${dog}` });
      }
      case "duplicate": {
        const dog = this.awaitingDuplicate.splice(Math.floor(this.rnd() * this.awaitingDuplicate.length), 1)[0];
        return make(dog, { photos: [photo(p(dog, 2)), photo(p(dog, 3))], request_id: `dup-${dog}`, requested_by: `0xother${dog}` });
      }
      case "extract": {
        const dog = Math.floor(this.rnd() * Math.max(1, this.registrationsSent));
        return make(dog, photo(p(dog, Math.floor(this.rnd() * 4))));
      }
      case "verify": {
        const dog = await this.registeredDog();
        return make(dog, { pet_did: this.petOf.get(dog), photo: photo(p(dog, shot)), requested_by: `0xguardian${dog}` });
      }
      case "identify": {
        const dog = await this.registeredDog();
        return make(dog, { photo: photo(p(dog, shot)), top_k: 5 });
      }
      case "transfer": {
        const dog = await this.registeredDog();
        return make(dog, {
          pet_did: this.petOf.get(dog),
          photo: photo(p(dog, shot)),
          from_guardian: `0xguardian${dog}`,
          to_guardian: `0xnew${index}`,
          request_id: `transfer-${index}`,
        });
      }
    }
  }

  /** The first registration that creates a dog's pet makes it available to the calls that need one. */
  private learn(dog: number, petDid: string): void {
    if (this.petOf.has(dog)) return;
    this.petOf.set(dog, petDid);
    this.registered.push(dog);
    this.waiters.splice(0).forEach((w) => w());
  }

  /**
   * Judges a final answer (success or a non-retryable in-band error) and
   * records what it established. Returns why it is wrong, or undefined.
   */
  settle(op: Op, res: any, replica: number): string | undefined {
    const expectedDid = this.petOf.get(op.dog);
    switch (op.kind) {
      case "extract":
        if (res.success && res.vector_size === 512 && res.vector.length === 512) return undefined;
        return `ExtractNoseVector answered ${brief(res)}`;
      case "register":
      case "duplicate": {
        const requestId = String(op.request.request_id);
        if (res.success) {
          this.registerAnswers.push({ dog: op.dog, requestId, petDid: res.pet_did, replica });
          if (expectedDid !== undefined && expectedDid !== res.pet_did) {
            return `dog ${op.dog} registered twice: ${expectedDid} and now ${res.pet_did} (${requestId})`;
          }
          if (!this.createdOn.has(res.pet_did)) this.createdOn.set(res.pet_did, replica);
          this.learn(op.dog, res.pet_did);
          return undefined;
        }
        if (res.error_code === "INVALID_REQUEST" && res.duplicate_pet_did) {
          this.registerAnswers.push({
            dog: op.dog,
            requestId,
            duplicateOf: res.duplicate_pet_did,
            similarity: res.duplicate_similarity,
            replica,
          });
          // The named pet is this dog's (its other registration won; that answer may come later) or,
          // when the model takes two synthetic dogs for one, another dog's: judged after the load.
          if (expectedDid !== undefined && expectedDid !== res.duplicate_pet_did) {
            return `dog ${op.dog} is ${expectedDid} but ${requestId} was refused as a duplicate of ${res.duplicate_pet_did}`;
          }
          return undefined;
        }
        return `RegisterPet ${requestId} answered ${brief(res)}`;
      }
      case "verify":
        if (res.success && res.verdict === "SAME") return undefined;
        return `VerifyPet of dog ${op.dog} (${expectedDid}) answered ${brief(res)}`;
      case "identify":
        if (res.success && res.matches[0]?.pet_did === expectedDid) return undefined;
        return `IdentifyPet of dog ${op.dog} (${expectedDid}) answered ${brief(res)}`;
      case "transfer":
        if (res.success && res.approved && res.approval_id) {
          const requestId = String(op.request.request_id);
          const before = this.approvals.get(requestId);
          this.approvals.set(requestId, res.approval_id);
          if (before !== undefined && before !== res.approval_id)
            return `transfer ${requestId} approved twice: ${before}, ${res.approval_id}`;
          return undefined;
        }
        return `ApproveTransfer of dog ${op.dog} (${expectedDid}) answered ${brief(res)}`;
    }
  }
}

/** An answer shortened for a failure message: no vectors, no bytes. */
export function brief(res: any): string {
  if (!res || typeof res !== "object") return String(res);
  const { vector, matches, ...rest } = res;
  const shown: Record<string, unknown> = { ...rest };
  if (Array.isArray(vector)) shown.vector = `${vector.length} values`;
  if (Array.isArray(matches))
    shown.matches = matches.slice(0, 2).map((m: any) => `${m.pet_did} ${m.verdict} ${Number(m.similarity).toFixed(3)}`);
  return JSON.stringify(shown).slice(0, 500);
}
