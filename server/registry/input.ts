import { isValidPetDid } from "../../shared/did.js";
import { REVIEW_THRESHOLD } from "../../shared/similarity.js";
import { invalidRequest } from "../errors.js";
import { readHeader, sniffFormat } from "../image/header.js";

// The limits on a request and the checks of its caller-supplied values.

export const MIN_REGISTER_PHOTOS = 2;
/**
 * Enrolment photos set the template every later check is compared with, so
 * they must carry detail: beads are a few pixels wide even at 224 px. Half the
 * model's input size on the short side is the least accepted (verification
 * shots may be smaller).
 */
export const MIN_ENROL_SIDE = 112;
export const MAX_REGISTER_PHOTOS = 10;
export const DEFAULT_TOP_K = 5;
export const MAX_TOP_K = 50;
/**
 * Every pair of one registration's photos must reach this (REVIEW, 0.70)
 * unless the running model's card sets `registration.pair_threshold`:
 * the duplicate check and the stored template guard against the rest, and
 * at SAME (0.85) most real dogs' photo pairs were refused.
 */
export const REGISTER_PAIR_THRESHOLD = REVIEW_THRESHOLD;

export const MAX_ID_LENGTH = 128;
export const MAX_GUARDIAN_LENGTH = 256;
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/** Shortens caller-supplied text before it goes into an error message. */
export function shown(s: unknown): string {
  const t = typeof s === "string" ? s : String(s);
  return JSON.stringify(t.length > 80 ? `${t.slice(0, 80)}...` : t);
}

/** A pet DID the registry can hold; INVALID_REQUEST otherwise. */
export function checkDid(petDid: unknown): string {
  if (!isValidPetDid(petDid)) throw invalidRequest(`invalid pet DID ${shown(petDid)}`);
  return petDid;
}

/** Caller-supplied text, absent when empty; bounded and free of control characters. */
export function optionalText(value: unknown, what: string, max: number): string | undefined {
  if (value === undefined || value === null || value === "") return undefined;
  if (typeof value !== "string" || value.length > max || CONTROL.test(value)) {
    throw invalidRequest(`${what} must be text of at most ${max} characters without control characters`);
  }
  return value;
}

/** As optionalText, but it must be given. */
export function requiredText(value: unknown, what: string, max: number): string {
  const v = optionalText(value, what, max);
  if (v === undefined) throw invalidRequest(`${what} is required`);
  return v;
}

/** Training consent must be a boolean, not something truthy. */
export function consentValue(value: unknown): boolean {
  if (typeof value !== "boolean") throw invalidRequest(`training consent must be true or false, got ${shown(value)}`);
  return value;
}

/** Decodability is checked by embedding; here only the declared size. */
export function checkEnrolmentSize(bytes: Uint8Array, label: string): void {
  const format = sniffFormat(bytes);
  if (!format) return;
  let side: number;
  try {
    const h = readHeader(bytes, format);
    side = Math.min(h.width, h.height);
  } catch {
    return; // the decoder reports a broken header with its own message
  }
  if (side < MIN_ENROL_SIDE) {
    throw invalidRequest(
      `${label} is only ${side} px on its short side; registration needs at least ${MIN_ENROL_SIDE} px, retake it closer`,
    );
  }
}
