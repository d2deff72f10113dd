import { isValidPetDid } from "../../shared/did.js";
import { invalidRequest } from "../errors.js";

/**
 * The platform's object layout, shared with the gateway and the previous
 * Python server:
 *
 *   nose-print-photo/{petDID}/image_1.jpg, image_2.jpg, ...   enrolment photos
 *   nose-print-photo/{petDID}/vector.npy                      enrolment template
 *   nose-print-photo/{petDID}/verify_{ms since epoch}.jpg     verification shots
 *   nose-print-photo/{petDID}/image_1.features, ...           keypoints of each enrolment photo
 *                                                              (shared/geometry/feature-file.ts)
 *   pet-vectors/{petDID}.json                                 legacy template
 *
 * and, never under a pet DID, the photos of refused registrations whose owner
 * gave training consent (server/registry/refused-photos.ts):
 *
 *   refused-registrations/{YYYY-MM-DD}/{id}/image_1.jpg, ..., meta.json
 */
export const PHOTO_PREFIX = "nose-print-photo";
export const LEGACY_VECTOR_PREFIX = "pet-vectors";
/** S3 allows 1024 bytes; platform keys are far shorter, so anything longer is suspect. */
export const MAX_KEY_LENGTH = 512;

export const petPrefix = (petDid: string) => `${PHOTO_PREFIX}/${petDid}/`;
/** `index` counts from 1, as the platform's file names do. */
export const imageKey = (petDid: string, index: number) => `${petPrefix(petDid)}image_${index}.jpg`;
export const vectorKey = (petDid: string) => `${petPrefix(petDid)}vector.npy`;
export const verifyImageKey = (petDid: string, timestampMs: number) => `${petPrefix(petDid)}verify_${timestampMs}.jpg`;
/** Keypoints of an enrolment photo, beside it: image_1.jpg -> image_1.features. */
export const featuresKey = (photoKey: string) => `${photoKey.replace(/\.[^./]*$/, "")}.features`;
export const REFUSED_PREFIX = "refused-registrations";
/** `day` is the UTC date of the refusal, `id` the request id (when key-safe) or a UUID. */
export const refusedFolder = (day: string, id: string) => `${REFUSED_PREFIX}/${day}/${id}/`;
export const legacyVectorKey = (petDid: string) => `${LEGACY_VECTOR_PREFIX}/${petDid}.json`;

// C0 and C1 control characters, DEL included.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
// Invisible format characters (bidirectional overrides, zero-width joiners,
// BOM) and line/paragraph separators: no platform key holds them, and echoed
// into an error message or a log line they make it read as something else.
const INVISIBLE = /[\p{Cf}\u2028\u2029]/u;
const codePoint = (c: string) => `U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0")}`;

/**
 * Checks the shape every stored key must have, whatever the backend: relative,
 * '/'-separated, no empty, '.' or '..' segments, no backslashes, no
 * percent-escapes (a gateway or proxy that decodes them could turn `%2e%2e`
 * into `..`), no control or invisible formatting characters, bounded length.
 * Throws invalidRequest.
 */
export function checkKeyShape(key: unknown, what = "object key"): string {
  if (typeof key !== "string" || key.length === 0) throw invalidRequest(`${what} is empty`);
  if (key.length > MAX_KEY_LENGTH) throw invalidRequest(`${what} is longer than ${MAX_KEY_LENGTH} characters`);
  if (CONTROL.test(key)) throw invalidRequest(`${what} contains a control character`);
  const invisible = INVISIBLE.exec(key);
  if (invisible) throw invalidRequest(`${what} contains an invisible formatting character (${codePoint(invisible[0])})`);
  if (key.includes("\\")) throw invalidRequest(`${what} contains a backslash: ${key}`);
  if (key.includes("%")) throw invalidRequest(`${what} contains a percent-escape: ${key}`);
  if (key.startsWith("/")) throw invalidRequest(`${what} must be relative, not absolute: ${key}`);
  for (const segment of key.split("/")) {
    if (segment === "") throw invalidRequest(`${what} has an empty path segment: ${key}`);
    if (segment === "." || segment === "..") throw invalidRequest(`${what} has a '${segment}' segment: ${key}`);
  }
  return key;
}

/**
 * A photo key sent by a caller for the pet `petDid`: it must name a file
 * directly under `nose-print-photo/{petDid}/`, so one pet's request can never
 * read another pet's objects or anything outside the photo area.
 */
export function validateImageKey(key: unknown, petDid: string): string {
  checkKeyShape(key, "image key");
  const k = key as string;
  const prefix = petPrefix(petDid);
  if (!k.startsWith(prefix)) throw invalidRequest(`image key must lie under ${prefix}: ${k}`);
  if (k.slice(prefix.length).includes("/")) {
    throw invalidRequest(`image key must name a file directly under ${prefix}: ${k}`);
  }
  return k;
}

/**
 * A photo key given where no pet is known yet (registration, 1:N search):
 * `nose-print-photo/{a valid DID}/{file}`. Returns the DID it lies under.
 */
export function validateUploadedPhotoKey(key: unknown): { key: string; petDid: string } {
  checkKeyShape(key, "image key");
  const parts = (key as string).split("/");
  if (parts.length !== 3 || parts[0] !== PHOTO_PREFIX || !isValidPetDid(parts[1])) {
    throw invalidRequest(`image key must have the form ${PHOTO_PREFIX}/{petDID}/{fileName}: ${key as string}`);
  }
  return { key: key as string, petDid: parts[1] };
}
