/**
 * NumPy .npy files for embeddings, without Node or DOM imports.
 *
 * The writer emits what `numpy.save` writes for a float32 vector: format 1.0,
 * descr '<f4', fortran_order False, shape (n,), header padded with spaces so
 * the data starts on a 64-byte boundary, header ending in '\n'.
 *
 * The reader accepts what other tools of the platform have written: '<f4' or
 * '<f8' (little-endian float32/float64), C order, shape (d,), (1, d) or
 * (n, d), header version 1.0 or 2.0 (3.0 too: it only differs in allowing
 * UTF-8 in the header). Everything else is refused with an NpyError naming
 * what was found, so a corrupt object never turns into a silent bad match.
 */

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // "\x93NUMPY"
const ALIGN = 64;

/** Why a file was refused: its format, or a vector length other than the expected one. */
export type NpyErrorReason = "format" | "dimension";

export class NpyError extends Error {
  constructor(
    readonly reason: NpyErrorReason,
    message: string,
  ) {
    super(message);
    this.name = "NpyError";
  }
}

export interface NpyArray {
  /** Shape as stored: [d], [1, d] or [n, d]. */
  shape: number[];
  /** One Float32Array per row (a 1-D file is one row). */
  rows: Float32Array[];
}

/** Serialises one vector as a 1-D '<f4' .npy file. */
export function writeNpy(vector: ArrayLike<number>): Uint8Array {
  const n = vector.length;
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${n},), }`;
  const prefix = MAGIC.length + 2 + 2; // magic, version, uint16 header length
  const total = Math.ceil((prefix + header.length + 1) / ALIGN) * ALIGN;
  header = header.padEnd(total - prefix - 1, " ") + "\n";

  const out = new Uint8Array(total + 4 * n);
  out.set(MAGIC, 0);
  out[6] = 1;
  out[7] = 0;
  const view = new DataView(out.buffer);
  view.setUint16(8, header.length, true);
  for (let i = 0; i < header.length; i++) out[prefix + i] = header.charCodeAt(i);
  for (let i = 0; i < n; i++) view.setFloat32(total + 4 * i, vector[i], true);
  return out;
}

/**
 * Parses a .npy file of float vectors. With `dim` set (the service uses 512),
 * a last axis of another length is a NpyError with reason "dimension".
 * Non-finite values are refused: no embedding the service writes has them.
 */
export function readNpy(bytes: Uint8Array, dim?: number): NpyArray {
  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) {
    throw new NpyError("format", "not a .npy file (magic string missing)");
  }
  const major = bytes[6];
  const minor = bytes[7];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerStart: number;
  let headerLen: number;
  if (major === 1 && minor === 0) {
    headerLen = view.getUint16(8, true);
    headerStart = 10;
  } else if ((major === 2 || major === 3) && minor === 0) {
    if (bytes.length < 12) throw new NpyError("format", ".npy header truncated");
    headerLen = view.getUint32(8, true);
    headerStart = 12;
  } else {
    throw new NpyError("format", `unsupported .npy format version ${major}.${minor}`);
  }
  const dataStart = headerStart + headerLen;
  if (dataStart > bytes.length) throw new NpyError("format", ".npy header truncated");
  let header = "";
  for (let i = headerStart; i < dataStart; i++) header += String.fromCharCode(bytes[i]);

  const descr = /['"]descr['"]\s*:\s*['"]([^'"]*)['"]/.exec(header)?.[1];
  const fortran = /['"]fortran_order['"]\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /['"]shape['"]\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    throw new NpyError("format", "malformed .npy header");
  }
  if (descr !== "<f4" && descr !== "<f8") {
    throw new NpyError("format", `unsupported .npy dtype '${descr}' (expected '<f4' or '<f8')`);
  }
  if (fortran !== "False") throw new NpyError("format", "fortran_order .npy files are not supported");

  const shape = shapeText
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((s) => (/^\d+$/.test(s) ? Number(s) : NaN));
  if (shape.some((d) => !Number.isSafeInteger(d)) || shape.length < 1 || shape.length > 2) {
    throw new NpyError("format", `unsupported .npy shape (${shapeText.trim()}): expected (d,), (1, d) or (n, d)`);
  }
  const width = shape[shape.length - 1];
  const height = shape.length === 2 ? shape[0] : 1;
  if (width === 0 || height === 0) throw new NpyError("format", `empty .npy array of shape (${shapeText.trim()})`);
  if (dim !== undefined && width !== dim) {
    throw new NpyError("dimension", `stored vector has ${width} dimensions, expected ${dim}`);
  }

  const itemSize = descr === "<f4" ? 4 : 8;
  const expected = width * height * itemSize;
  if (bytes.length - dataStart !== expected) {
    throw new NpyError(
      "format",
      `.npy data is ${bytes.length - dataStart} bytes, shape (${shapeText.trim()}) of ${descr} needs ${expected}`,
    );
  }

  const rows: Float32Array[] = [];
  for (let r = 0; r < height; r++) {
    const row = new Float32Array(width);
    const base = dataStart + r * width * itemSize;
    for (let i = 0; i < width; i++) {
      const x = itemSize === 4 ? view.getFloat32(base + 4 * i, true) : view.getFloat64(base + 8 * i, true);
      if (!Number.isFinite(x)) throw new NpyError("format", `.npy value at row ${r}, index ${i} is not finite`);
      row[i] = x;
    }
    rows.push(row);
  }
  return { shape, rows };
}
