/**
 * Assembles server/image/lanczos-simd.wat (WebAssembly text with SIMD) and writes the bytes as a TypeScript
 * module, server/image/lanczos-simd-wasm.ts. The generated module is committed: the server never needs wabt at
 * run time, and `tsc` builds carry the bytes (it would not copy a .wasm file to build/).
 *
 *   npm run build:wasm
 *
 * server/image/lanczos-simd.test.ts assembles the text again and checks the committed bytes are the same.
 */
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import wabtInit from "wabt";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const WAT_PATH = path.join(ROOT, "server/image/lanczos-simd.wat");
export const MODULE_PATH = path.join(ROOT, "server/image/lanczos-simd-wasm.ts");

/** The module's bytes, assembled from `watText` (by default the .wat file as it is now). */
export async function assembleLanczosWasm(watText: string = readFileSync(WAT_PATH, "utf8")): Promise<Uint8Array> {
  const wabt = await wabtInit();
  const mod = wabt.parseWat(path.basename(WAT_PATH), watText, { simd: true });
  try {
    mod.validate();
    // No names section: the bytes depend on the code alone.
    return mod.toBinary({ log: false, canonicalize_lebs: true, relocatable: false, write_debug_names: false }).buffer;
  } finally {
    mod.destroy();
  }
}

/** The generated module's text: the bytes in base64, in lines short enough that prettier leaves them as they are. */
export function moduleText(bytes: Uint8Array): string {
  const b64 = Buffer.from(bytes).toString("base64");
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 128) lines.push(`  "${b64.slice(i, i + 128)}",`);
  return [
    "// Generated from server/image/lanczos-simd.wat by scripts/build-lanczos-wasm.ts (npm run build:wasm).",
    "// Do not edit: change the .wat and run the script again.",
    "",
    "const BASE64 = [",
    ...lines,
    '].join("");',
    "",
    `/** The assembled module, ${bytes.length} bytes. */`,
    'export const lanczosSimdWasm: Uint8Array<ArrayBuffer> = new Uint8Array(Buffer.from(BASE64, "base64"));',
    "",
  ].join("\n");
}

async function main(): Promise<void> {
  const bytes = await assembleLanczosWasm();
  writeFileSync(MODULE_PATH, moduleText(bytes));
  console.log(`${path.relative(ROOT, MODULE_PATH)}: ${bytes.length} bytes from ${path.relative(ROOT, WAT_PATH)}`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main();
}
