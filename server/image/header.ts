import { invalidImage } from "../errors.js";

// What an image file declares, read from its first bytes without decoding
// any pixels: the format by magic bytes, the size and layout from the
// header, and the structural checks made before the decoder sees the data.

export type ImageFormat = "jpeg" | "png";

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

function startsWith(bytes: Uint8Array, prefix: readonly number[], at = 0): boolean {
  if (bytes.length < at + prefix.length) return false;
  return prefix.every((b, i) => bytes[at + i] === b);
}

const ascii = (s: string) => Array.from(s, (c) => c.charCodeAt(0));

/** JPEG or PNG by magic bytes; anything else is undefined. */
export function sniffFormat(bytes: Uint8Array): ImageFormat | undefined {
  if (startsWith(bytes, [0xff, 0xd8, 0xff])) return "jpeg";
  if (startsWith(bytes, PNG_SIGNATURE)) return "png";
  return undefined;
}

/** A name for the formats people actually send, for the error message. */
export function describeOther(bytes: Uint8Array): string {
  if (startsWith(bytes, ascii("GIF8"))) return "GIF";
  if (startsWith(bytes, ascii("RIFF")) && startsWith(bytes, ascii("WEBP"), 8)) return "WebP";
  if (startsWith(bytes, ascii("BM"))) return "BMP";
  if (startsWith(bytes, ascii("II*\0")) || startsWith(bytes, ascii("MM\0*"))) return "TIFF";
  if (startsWith(bytes, ascii("ftyp"), 4)) return describeIsoMedia(bytes);
  if (startsWith(bytes, [0xff, 0x0a]) || startsWith(bytes, ascii("\0\0\0\x0cJXL "))) return "JPEG XL";
  if (startsWith(bytes, [0xff, 0x4f, 0xff, 0x51]) || startsWith(bytes, ascii("\0\0\0\x0cjP  "))) return "JPEG 2000";
  if (startsWith(bytes, ascii("%PDF"))) return "PDF";
  // A file cut inside the magic bytes is not recognisable as JPEG or PNG, but
  // saying what it starts like tells the caller the upload was truncated.
  if (bytes.length === 2 && startsWith(bytes, [0xff, 0xd8])) return `the first ${bytes.length} bytes of a JPEG (cut short)`;
  if (bytes.length >= 2 && bytes.length < 8 && PNG_SIGNATURE.slice(0, bytes.length).every((b, i) => bytes[i] === b)) {
    return `the first ${bytes.length} bytes of a PNG (cut short)`;
  }
  return "unrecognised data";
}

/** ISO base media files (ftyp box): name the image formats by their brands. */
function describeIsoMedia(bytes: Uint8Array): string {
  const boxEnd = Math.min(bytes.length, Math.max(16, u32(bytes, 0)));
  const brands = new Set<string>();
  for (let i = 8; i + 4 <= boxEnd; i += i === 8 ? 8 : 4) brands.add(String.fromCharCode(...bytes.subarray(i, i + 4)));
  if (brands.has("avif") || brands.has("avis")) return "AVIF";
  if (["heic", "heix", "heim", "heis", "hevc", "hevx"].some((b) => brands.has(b))) return "HEIC";
  if (brands.has("mif1") || brands.has("msf1")) return "HEIF";
  return "an ISO media file (MP4, MOV or similar)";
}

/** What the header declares, read without decoding any pixels. */
export interface ImageHeader {
  width: number;
  height: number;
  /** PNG: bit depth and colour type from IHDR. */
  bitDepth?: number;
  colorType?: number;
  /** JPEG: number of components in the frame (4 = CMYK or YCCK). */
  components?: number;
}

const u16 = (b: Uint8Array, i: number) => (b[i] << 8) | b[i + 1];
const u32 = (b: Uint8Array, i: number) => ((b[i] << 24) >>> 0) + ((b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]);

/** PNG IHDR: it must be the first chunk. */
function readPngHeader(b: Uint8Array): ImageHeader {
  if (b.length < 8 + 8 + 13) throw invalidImage("PNG is truncated before its IHDR header");
  if (u32(b, 8) !== 13 || !startsWith(b, ascii("IHDR"), 12)) throw invalidImage("PNG does not start with an IHDR header");
  const width = u32(b, 16);
  const height = u32(b, 20);
  if (width === 0 || height === 0 || width > 0x7fffffff || height > 0x7fffffff) {
    throw invalidImage(`PNG declares an impossible size ${width}x${height}`);
  }
  return { width, height, bitDepth: b[24], colorType: b[25] };
}

let crcTable: Uint32Array | undefined;

function crc32(b: Uint8Array, start: number, end: number): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = start; i < end; i++) c = crcTable[(c ^ b[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/**
 * Pillow reads every chunk before the image data when it opens a PNG and
 * refuses the file if one is cut short or fails its CRC; libpng would only
 * drop a broken ancillary chunk, so check them here.
 */
export function checkPngChunks(b: Uint8Array): void {
  let i = 8;
  for (;;) {
    if (i + 8 > b.length) throw invalidImage("PNG is truncated before its image data");
    const length = u32(b, i);
    const type = String.fromCharCode(b[i + 4], b[i + 5], b[i + 6], b[i + 7]);
    // Chunk types are four ASCII letters; anything else is damage, not a chunk to name.
    if (!/^[A-Za-z]{4}$/.test(type)) throw invalidImage(`PNG is corrupt (no valid chunk type at byte ${i + 4})`);
    if (type === "IDAT") return;
    if (type === "IEND") throw invalidImage("PNG has no image data");
    const end = i + 8 + length;
    if (length > 0x7fffffff || end + 4 > b.length) throw invalidImage(`PNG is truncated in its ${type} chunk`);
    if (crc32(b, i + 4, end) !== u32(b, end)) throw invalidImage(`PNG ${type} chunk is corrupt (CRC mismatch)`);
    i = end + 4;
  }
}

// SOF0..SOF15 minus DHT (C4), JPG (C8) and DAC (CC).
const isStartOfFrame = (m: number) => m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc;

/** JPEG: walk the marker segments up to the first frame header (SOFn). */
function readJpegHeader(b: Uint8Array): ImageHeader {
  let i = 2;
  for (;;) {
    if (i >= b.length) throw invalidImage("JPEG is truncated before its frame header");
    if (b[i] !== 0xff) throw invalidImage("JPEG header is corrupt (expected a marker)");
    while (i < b.length && b[i] === 0xff) i++; // fill bytes
    if (i >= b.length) throw invalidImage("JPEG is truncated before its frame header");
    const marker = b[i++];
    if ((marker >= 0xd0 && marker <= 0xd7) || marker === 0x01) continue; // no payload
    if (marker === 0xd8 || marker === 0xd9 || marker === 0xda) {
      throw invalidImage("JPEG has no frame header before its image data");
    }
    if (i + 2 > b.length) throw invalidImage("JPEG is truncated before its frame header");
    const length = u16(b, i);
    if (length < 2) throw invalidImage("JPEG header is corrupt (bad segment length)");
    if (isStartOfFrame(marker)) {
      if (length < 8 || i + 8 > b.length) throw invalidImage("JPEG frame header is truncated");
      const height = u16(b, i + 3);
      const width = u16(b, i + 5);
      const components = b[i + 7];
      // A zero height would be given later by a DNL marker, which neither
      // libjpeg nor Pillow supports.
      if (width === 0 || height === 0) throw invalidImage(`JPEG declares an unsupported size ${width}x${height}`);
      return { width, height, components };
    }
    i += length;
  }
}

// Markers libjpeg's reader knows; meeting any other one is a fatal error for
// it (JERR_UNKNOWN_MARKER): SOFn/DHT/JPG/DAC, RSTn, SOI, EOI, SOS, DQT, DNL,
// DRI, APPn, COM and TEM.
const isKnownMarker = (m: number) => (m >= 0xc0 && m <= 0xdd) || (m >= 0xe0 && m <= 0xef) || m === 0xfe || m === 0x01;

/**
 * Walks the marker structure of a JPEG up to its EOI, including the
 * entropy-coded data of every scan. Noise written over a scan usually holds
 * an 0xFF followed by a byte that is no marker: libjpeg then fails when
 * Pillow finishes the decompression, but sharp has already stopped reading
 * and returns the damaged picture. Refuse those files the way Pillow does.
 * Truncation is left to the decoder, which reports it.
 */
export function checkJpegMarkers(b: Uint8Array): void {
  let i = 2;
  while (i < b.length) {
    if (b[i] !== 0xff) {
      i++; // stray bytes between segments: a libjpeg warning only
      continue;
    }
    while (i < b.length && b[i] === 0xff) i++;
    if (i >= b.length) return;
    const marker = b[i++];
    if (marker === 0xd9) return;
    if (!isKnownMarker(marker)) {
      throw invalidImage(`JPEG data is corrupt (unknown marker 0x${marker.toString(16)} at byte ${i - 1})`);
    }
    if ((marker >= 0xd0 && marker <= 0xd8) || marker === 0x01) continue;
    if (i + 2 > b.length) return;
    i += u16(b, i);
    if (marker !== 0xda) continue;
    // Entropy-coded data runs to the first 0xFF that is not a stuffed zero,
    // a restart marker or a fill byte.
    for (;;) {
      const f = b.indexOf(0xff, i);
      if (f < 0 || f + 1 >= b.length) return;
      const next = b[f + 1];
      if (next === 0x00 || (next >= 0xd0 && next <= 0xd7)) i = f + 2;
      else if (next === 0xff) i = f + 1;
      else {
        i = f;
        break;
      }
    }
  }
}

/** Declared size (and layout) from the header; throws INVALID_IMAGE when unreadable. */
export function readHeader(bytes: Uint8Array, format: ImageFormat): ImageHeader {
  return format === "png" ? readPngHeader(bytes) : readJpegHeader(bytes);
}

/**
 * A JPEG's EXIF orientation (1-8; 1 when it has no EXIF or no orientation
 * tag), read from the marker segments before the first scan. Undefined when
 * the answer could depend on the reader (more than one EXIF segment, a
 * damaged or unusual one, a value outside 1-8): the caller then leaves
 * orientation to sharp, whose handling the tests hold against Pillow's.
 */
export function jpegExifOrientation(b: Uint8Array): number | undefined {
  let exif: Uint8Array | undefined;
  let i = 2;
  for (;;) {
    // Stray bytes or a file cut before its first scan: libjpeg would warn or fail.
    if (i + 4 > b.length || b[i] !== 0xff) return undefined;
    const marker = b[i + 1];
    if (marker === 0xff) {
      i++; // fill byte
      continue;
    }
    if (marker === 0xda) break;
    if ((marker >= 0xd0 && marker <= 0xd7) || marker === 0x01) {
      i += 2;
      continue;
    }
    const length = u16(b, i + 2);
    if (length < 2 || i + 2 + length > b.length) return undefined;
    if (marker === 0xe1 && startsWith(b, ascii("Exif"), i + 4)) {
      if (exif) return undefined;
      exif = b.subarray(i + 4, i + 2 + length);
    }
    i += 2 + length;
  }
  return exif ? tiffOrientation(exif) : 1;
}

/** IFD0's Orientation (tag 0x0112, one SHORT) in an APP1 "Exif\0\0" payload. */
function tiffOrientation(exif: Uint8Array): number | undefined {
  if (exif.length < 6 + 8 || exif[4] !== 0 || exif[5] !== 0) return undefined;
  const t = exif.subarray(6);
  const little = t[0] === 0x49 && t[1] === 0x49;
  if (!little && !(t[0] === 0x4d && t[1] === 0x4d)) return undefined;
  const r16 = (at: number) => (little ? t[at] | (t[at + 1] << 8) : u16(t, at));
  const r32 = (at: number) => (little ? (r16(at) | (r16(at + 2) << 16)) >>> 0 : u32(t, at));
  if (r16(2) !== 42) return undefined;
  const ifd = r32(4);
  if (ifd + 2 > t.length) return undefined;
  const count = r16(ifd);
  if (ifd + 2 + count * 12 > t.length) return undefined;
  for (let e = ifd + 2; e < ifd + 2 + count * 12; e += 12) {
    if (r16(e) !== 0x0112) continue;
    const value = r16(e + 8);
    return r16(e + 2) === 3 && r32(e + 4) === 1 && value >= 1 && value <= 8 ? value : undefined;
  }
  return 1;
}
