import { keccak_256 } from "@noble/hashes/sha3.js";

/**
 * Pet DIDs.
 *
 * The platform derives a new pet's DID from its enrolment template: the first
 * 20 bytes (40 hex digits) of keccak256 over the vector's float32
 * little-endian bytes, as `did:ethr:besu:0x...`, the same shape as an
 * Ethereum address. Bytes are written explicitly little-endian so the DID
 * does not depend on the host's byte order.
 *
 * Accepted on input:
 * - `did:ethr:besu:0x` + exactly 40 hex digits (either case);
 * - `did:pet:` + 1 to 128 characters of [A-Za-z0-9._-] starting with a
 *   letter or digit, for DIDs other parts of the platform issue.
 * Nothing else: a DID becomes a path segment of storage keys, so the patterns
 * exclude '/', '\\', '%', whitespace and control characters by construction.
 */

const DID_PREFIX = "did:ethr:besu:0x";
const ETHR_DID = /^did:ethr:besu:0x[0-9a-fA-F]{40}$/;
const PET_DID = /^did:pet:[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function petDidFromVector(v: Float32Array): string {
  const bytes = new Uint8Array(v.length * 4);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < v.length; i++) view.setFloat32(4 * i, v[i], true);
  const digest = keccak_256(bytes);
  let hex = "";
  for (let i = 0; i < 20; i++) hex += digest[i].toString(16).padStart(2, "0");
  return DID_PREFIX + hex;
}

export function isValidPetDid(s: unknown): s is string {
  return typeof s === "string" && (ETHR_DID.test(s) || PET_DID.test(s));
}
