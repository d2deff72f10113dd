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

/** The displayed size once `out` is filled, or why the addon left the file to sharp. */
export type NativeJpegResult = { width: number; height: number } | { declined: true; message: string };

interface Addon {
  decode(bytes: Uint8Array, out: Uint8Array, orientation: number): Promise<NativeJpegResult>;
}

function load(): { addon?: Addon; unavailable?: string } {
  try {
    return { addon: createRequire(import.meta.url)(JPEG_ADDON_PATH) as Addon };
  } catch (err) {
    const first = (err instanceof Error ? err.message : String(err)).split("\n")[0];
    return { unavailable: first };
  }
}

const loaded = load();

/** Why the addon is not in use (for the start-up log), or undefined when it is. */
export const nativeJpegUnavailable: string | undefined = loaded.unavailable;

/**
 * Decodes a JPEG into `out` (width x height x 3 bytes, from the header) as
 * RGB and applies an EXIF orientation (1-8), or declines (see jpeg-decode.c
 * for when): the caller then decodes with sharp. Undefined when the addon is
 * not loaded.
 */
export const decodeJpegNative: Addon["decode"] | undefined = loaded.addon ? loaded.addon.decode.bind(loaded.addon) : undefined;
