import { createRequire } from "node:module";
import path from "node:path";
import { ROOT } from "../package-root.js";

/**
 * The libjpeg decoder addon (server/image/jpeg-decode.c, built by
 * scripts/build-native-if-needed.mjs before `npm start` and `npm test`), when
 * it was built and loads: Pillow's pixels for clean baseline JPEGs, in about
 * half of sharp's time at 1080 px. Absent, every JPEG goes through sharp.
 */
export const JPEG_ADDON_PATH = path.join(ROOT, "dist", "native", "jpeg-decode.node");

/** Why the addon left a file to sharp (see jpeg-decode.c). */
export interface Declined {
  declined: true;
  message: string;
}

/** libjpeg's DCT scaling: ceil(width / shrink) x ceil(height / shrink) pixels, as Pillow's `draft` gives. */
export type Shrink = 1 | 2 | 4 | 8;

/** An opaque libjpeg decoder, read in strips. */
type Handle = { readonly __brand: "jpeg-decoder" };

interface Addon {
  decode(bytes: Uint8Array, out: Uint8Array, orientation: number, shrink: Shrink): Promise<{ width: number; height: number } | Declined>;
  open(bytes: Uint8Array, shrink: Shrink): { handle: Handle; width: number; height: number } | Declined;
  read(handle: Handle, out: Uint8Array, rows: number): Promise<{ rows: number } | Declined>;
  close(handle: Handle): void;
}

function load(): { addon?: Addon; unavailable?: string } {
  try {
    return { addon: createRequire(import.meta.url)(JPEG_ADDON_PATH) as Addon };
  } catch (err) {
    const first = (err instanceof Error ? err.message : String(err)).split("\n")[0];
    return { unavailable: first };
  }
}

const { addon, unavailable } = load();

/** Why the addon is not in use (for the start-up log), or undefined when it is. */
export const nativeJpegUnavailable: string | undefined = unavailable;

/** Whether JPEGs can be decoded by the addon here. */
export const nativeJpegLoaded = addon !== undefined;

/**
 * Decodes a JPEG, shrunk by `shrink`, into `out` (3 bytes a pixel, sized from
 * the header) as RGB and applies an EXIF orientation (1-8), or declines: the
 * caller then decodes with sharp. Resolves to the displayed size. Throws when
 * the addon is not loaded.
 */
export function decodeJpegNative(
  bytes: Uint8Array,
  out: Uint8Array,
  orientation: number,
  shrink: Shrink,
): Promise<{ width: number; height: number } | Declined> {
  if (!addon) throw new Error(`the libjpeg decoder addon is not loaded: ${unavailable}`);
  return addon.decode(bytes, out, orientation, shrink);
}

/** A JPEG being decoded by the addon in strips of rows, top to bottom, as stored (no EXIF orientation). */
export interface JpegStrips {
  width: number;
  height: number;
  /**
   * The next `rows` rows (fewer at the end) into `out`, 3 x width bytes a
   * row; resolves to how many came, or undefined when the addon declined the
   * file partway (then it is closed, and the caller decodes it again with sharp).
   */
  read(out: Uint8Array, rows: number): Promise<number | undefined>;
  /** Frees the decoder now; it is freed with its handle otherwise, and once the last row is read. */
  close(): void;
}

/** Opens a JPEG, shrunk by `shrink`, for reading in strips, or says why the addon declines it. Throws when the addon is not loaded. */
export function openJpegNative(bytes: Uint8Array, shrink: Shrink): JpegStrips | Declined {
  if (!addon) throw new Error(`the libjpeg decoder addon is not loaded: ${unavailable}`);
  const opened = addon.open(bytes, shrink);
  if ("declined" in opened) return opened;
  const { handle, width, height } = opened;
  return {
    width,
    height,
    read: async (out, rows) => {
      const r = await addon.read(handle, out, rows);
      return "declined" in r ? undefined : r.rows;
    },
    close: () => addon.close(handle),
  };
}
