import pg from "pg";
import type { ObjectStore } from "../server/storage/object-store.js";
import type { PostgresConfig } from "../server/db/database.js";
import { createBalancer, type Balancer } from "./balancer.js";
import type { NosePhotoSet } from "./nose-photo-cache.js";
import { brief, type Workload } from "./workload.js";

export interface RegistryCheck {
  /** Dogs whose registration was sent. */
  dogs: number;
  /** Rows in `pets`. */
  pets: number;
  /** Registration calls refused as a duplicate (the dog's other registration won). */
  duplicateAnswers: number;
  /**
   * Dogs refused as duplicates of another dog's pet: the model scores the
   * two synthetic dogs as one nose (every photo at or above the card's
   * duplicate similarity). The registry did what its rule says; the count is
   * the model's false-duplicate rate on this set of dogs.
   */
  lookalikes: Array<{ dog: number; of: number; similarity: number }>;
  /** Pets whose objects (photos, vector.npy) are all in the store. */
  objectsPresent: number;
  /** Pets that VerifyPet with an enrolment photo answered SAME for, on another replica than the one that created them where there is one. */
  verified: number;
  /** Pets that IdentifyPet with another capture found first, on a third replica where there is one. */
  identified: number;
  /** Transfer approvals in the database; each approved request id once. */
  approvals: number;
  problems: string[];
}

export interface RegistryCheckOptions {
  workload: Workload;
  photos: NosePhotoSet;
  database: PostgresConfig;
  store: ObjectStore;
  addresses: string[];
  concurrency?: number;
  /** The similarity from which the servers refuse duplicates (the model card's); a look-alike refused below it is a fault. */
  duplicateSimilarity: number;
  /**
   * The share of dogs that may be look-alikes (refused as another synthetic
   * dog's pet) before the run fails: beyond it, the registry refusing new
   * dogs is a fault, not the model's false-duplicate rate. Default 0.02,
   * at least one dog.
   */
  maxLookalikeShare?: number;
}

/**
 * After the load: nothing lost, nothing twice. Compares what the clients were
 * told with what the database and the object store hold, then reads every
 * pet back through the service.
 */
export async function checkRegistry(o: RegistryCheckOptions): Promise<RegistryCheck> {
  const { workload } = o;
  const problems: string[] = [];
  const sent = new Set(workload.registerAnswers.map((a) => a.dog));
  if (!Number.isFinite(o.duplicateSimilarity) || o.duplicateSimilarity <= 0 || o.duplicateSimilarity > 1) {
    throw new Error(`duplicate similarity ${o.duplicateSimilarity} is not a similarity in (0, 1]: look-alikes cannot be judged`);
  }

  // 1. Each dog is one pet in every answer, or (a look-alike) refused in favour of another dog's pet.
  const dogOf = new Map([...workload.petOf].map(([dog, did]) => [did, dog]));
  const lookalikes: RegistryCheck["lookalikes"] = [];
  for (const dog of sent) {
    const answers = workload.registerAnswers.filter((a) => a.dog === dog);
    const dids = new Set(answers.map((a) => (a.petDid ?? a.duplicateOf)!));
    if (workload.petOf.has(dog)) {
      if (dids.size !== 1) problems.push(`dog ${dog} was answered as ${dids.size} pets: ${[...dids].join(", ")}`);
      continue;
    }
    const others = answers.map((a) => dogOf.get(a.duplicateOf!));
    if (others.some((o) => o === undefined || o === dog) || dids.size !== 1) {
      problems.push(`dog ${dog}: no registration created its pet and the refusals name ${[...dids].join(", ")}, not one other dog's pet`);
    } else {
      const similarity = Math.min(...answers.map((a) => a.similarity ?? NaN));
      lookalikes.push({ dog, of: others[0]!, similarity });
      if (!(similarity >= o.duplicateSimilarity))
        problems.push(`dog ${dog} refused as dog ${others[0]} at ${similarity}, under the duplicate similarity ${o.duplicateSimilarity}`);
    }
  }

  const maxLookalikes = Math.max(1, Math.floor(sent.size * (o.maxLookalikeShare ?? 0.02)));
  if (lookalikes.length > maxLookalikes) {
    problems.push(
      `${lookalikes.length} of ${sent.size} dogs were refused as another dog's pet, more than the ${maxLookalikes} allowed: ${JSON.stringify(lookalikes.slice(0, 10))}`,
    );
  }

  // 2. The database holds exactly those pets, each with its embeddings, and each approval once.
  const client = new pg.Client({
    host: o.database.host,
    port: o.database.port,
    user: o.database.username,
    password: o.database.password,
    database: o.database.database,
  });
  await client.connect();
  let rows: Array<{ pet_did: string; request_id: string | null; image_keys: string[]; vector_key: string; embeddings: number }>;
  let approvals: Array<{ request_id: string; approval_id: string }>;
  try {
    rows = (
      await client.query(
        `SELECT p.pet_did, p.request_id, p.image_keys, p.vector_key, (SELECT count(*)::int FROM pet_embeddings e WHERE e.pet_did = p.pet_did) AS embeddings FROM pets p`,
      )
    ).rows;
    approvals = (await client.query("SELECT request_id, approval_id::text AS approval_id FROM transfer_approvals")).rows;
  } finally {
    await client.end();
  }
  const expected = new Set(workload.petOf.values());
  const held = new Set(rows.map((r) => r.pet_did));
  for (const did of expected) if (!held.has(did)) problems.push(`pet ${did} was answered but is not in the database`);
  for (const r of rows) {
    if (!expected.has(r.pet_did))
      problems.push(`the database holds pet ${r.pet_did} (request ${r.request_id}) that no answer named: a second pet for some dog`);
    if (r.embeddings !== r.image_keys.length)
      problems.push(`pet ${r.pet_did} has ${r.embeddings} embeddings for ${r.image_keys.length} photos`);
  }
  const approvedIds = new Map(approvals.map((a) => [a.request_id, a.approval_id]));
  for (const [requestId, approvalId] of workload.approvals) {
    if (approvedIds.get(requestId) !== approvalId)
      problems.push(`transfer ${requestId} answered approval ${approvalId}, the database holds ${approvedIds.get(requestId)}`);
  }
  if (approvals.length !== workload.approvals.size)
    problems.push(`${approvals.length} approvals in the database for ${workload.approvals.size} approved transfers`);

  // 3. Every object a pet row points to is in the store.
  let objectsPresent = 0;
  for (const r of rows) {
    const missing: string[] = [];
    for (const key of [...r.image_keys, r.vector_key]) if (!(await o.store.exists(key))) missing.push(key);
    if (missing.length) problems.push(`pet ${r.pet_did}: missing objects ${missing.join(", ")}`);
    else objectsPresent++;
  }

  // 4. Read back through the service, across replicas.
  const n = o.addresses.length;
  const balancers: Balancer[] = o.addresses.map((a) => createBalancer([a], { failover: false }));
  let verified = 0;
  let identified = 0;
  const dogs = [...workload.petOf.keys()];
  const readBack = async (dog: number) => {
    const petDid = workload.petOf.get(dog)!;
    const winner = workload.registerAnswers.find((a) => a.dog === dog && a.petDid === petDid);
    const own = winner?.requestId.startsWith("dup-") ? [2, 3] : [0, 1];
    const other = own[0] === 0 ? 2 : 0;
    const home = workload.createdOn.get(petDid) ?? 0;
    const v = await balancers[(home + 1) % n].call("VerifyPet", {
      pet_did: petDid,
      photo: { image_data: o.photos(dog, own[0]), image_format: "jpeg" },
    });
    if (v.res.success && v.res.verdict === "SAME") verified++;
    else problems.push(`pet ${petDid} (dog ${dog}) does not verify with its own photo: ${brief(v.res)}`);
    const i = await balancers[(home + 2) % n].call("IdentifyPet", {
      photo: { image_data: o.photos(dog, other), image_format: "jpeg" },
      top_k: 3,
    });
    if (i.res.success && i.res.matches[0]?.pet_did === petDid) identified++;
    else problems.push(`pet ${petDid} (dog ${dog}) is not found first by IdentifyPet: ${brief(i.res)}`);
  };
  try {
    let next = 0;
    await Promise.all(
      Array.from({ length: o.concurrency ?? 8 }, async () => {
        while (next < dogs.length) await readBack(dogs[next++]).catch((e: Error) => problems.push(e.message));
      }),
    );
  } finally {
    balancers.forEach((b) => b.close());
  }

  return {
    dogs: sent.size,
    pets: rows.length,
    duplicateAnswers: workload.registerAnswers.filter((a) => a.duplicateOf && workload.petOf.has(a.dog)).length,
    lookalikes,
    objectsPresent,
    verified,
    identified,
    approvals: approvals.length,
    problems,
  };
}
