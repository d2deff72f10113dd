import { keccak_256 } from "@noble/hashes/sha3.js";
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { isValidPetDid, petDidFromVector } from "./did.js";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

describe("petDidFromVector", () => {
  test("keccak256 is the Ethereum variant, not SHA3-256 (known answers)", () => {
    assert.equal(hex(keccak_256(new Uint8Array(0))), "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470");
    assert.equal(hex(keccak_256(new TextEncoder().encode("abc"))), "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45");
  });

  test("hashes the vector's float32 little-endian bytes and keeps the first 40 hex digits", () => {
    const v = Float32Array.from({ length: 512 }, (_, i) => Math.sin(i) / 16);
    const le = Buffer.alloc(512 * 4);
    v.forEach((x, i) => le.writeFloatLE(x, 4 * i));
    const did = petDidFromVector(v);
    assert.equal(did, "did:ethr:besu:0x" + hex(keccak_256(le)).slice(0, 40));
    assert.match(did, /^did:ethr:besu:0x[0-9a-f]{40}$/);
  });

  test("known answer for a fixed vector (guards against layout changes)", () => {
    // [1, 0, 0, ...] as float32 LE is 00 00 80 3f followed by 2044 zero bytes.
    const v = new Float32Array(512);
    v[0] = 1;
    const bytes = new Uint8Array(2048);
    bytes.set([0x00, 0x00, 0x80, 0x3f]);
    assert.equal(petDidFromVector(v), "did:ethr:besu:0x" + hex(keccak_256(bytes)).slice(0, 40));
    assert.equal(petDidFromVector(v), petDidFromVector(Float32Array.from(v)));
  });

  test("differs for different vectors", () => {
    const a = new Float32Array(512).fill(0.1);
    const b = a.slice();
    b[511] = 0.1000001;
    assert.notEqual(petDidFromVector(a), petDidFromVector(b));
  });
});

describe("isValidPetDid", () => {
  const valid = [
    "did:ethr:besu:0x" + "a".repeat(40),
    "did:ethr:besu:0x" + "0123456789ABCDEFabcdef0123456789abcdef01",
    "did:pet:abc",
    "did:pet:Dog-42_v1.0",
    "did:pet:" + "x".repeat(128),
  ];
  const invalid = [
    "",
    "did:ethr:besu:0x" + "a".repeat(39),
    "did:ethr:besu:0x" + "a".repeat(41),
    "did:ethr:besu:0x" + "g".repeat(40),
    "did:ethr:besu:" + "a".repeat(40),
    "did:ethr:mainnet:0x" + "a".repeat(40),
    "DID:ETHR:BESU:0x" + "a".repeat(40),
    " did:pet:abc",
    "did:pet:",
    "did:pet:..",
    "did:pet:.hidden",
    "did:pet:a/b",
    "did:pet:a\\b",
    "did:pet:a%2fb",
    "did:pet:a b",
    "did:pet:a\u0000",
    "did:pet:" + "x".repeat(129),
    "did:other:abc",
  ];
  for (const s of valid) test(`accepts ${s.slice(0, 40)}`, () => assert.equal(isValidPetDid(s), true));
  for (const s of invalid) test(`refuses ${JSON.stringify(s.slice(0, 40))}`, () => assert.equal(isValidPetDid(s), false));
  test("refuses non-strings", () => {
    assert.equal(isValidPetDid(undefined), false);
    assert.equal(isValidPetDid(42), false);
  });
});
