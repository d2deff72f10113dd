import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, stat, unlink, writeFile } from "node:fs/promises";
import { dirname, join, relative, resolve, sep } from "node:path";
import { invalidRequest, storageError } from "../errors.js";
import { checkKeyShape } from "./keys.js";
import type { ObjectStore } from "./object-store.js";

export interface FolderStoreConfig {
  /** Root folder; keys map to paths below it. Default `./data/objects`. */
  root?: string;
}

// Temporary files of in-flight writes carry this prefix; keys may not use it,
// and list() never reports them.
const TMP_PREFIX = ".nosepaw-tmp-";

const isMissing = (e: unknown) => {
  const code = (e as NodeJS.ErrnoException)?.code;
  return code === "ENOENT" || code === "ENOTDIR" || code === "EISDIR";
};

/**
 * Objects as files under a local folder, for development and single-node
 * installs. A write goes to a temporary file in the target folder and is
 * renamed into place, so readers see the old object or the new one, never a
 * torn one, even if the process dies mid-write.
 */
export function createFolderStore(config: FolderStoreConfig = {}): ObjectStore {
  const root = resolve(config.root ?? "./data/objects");

  const pathOf = (key: string): string => {
    checkKeyShape(key);
    if (key.split("/").some((s) => s.startsWith(TMP_PREFIX))) throw invalidRequest(`reserved object key: ${key}`);
    const p = resolve(root, ...key.split("/"));
    // Belt and braces: checkKeyShape already excludes every way out.
    if (!p.startsWith(root + sep)) throw invalidRequest(`object key escapes the store: ${key}`);
    return p;
  };

  const fail = (op: string, key: string, e: unknown) =>
    storageError(`folder store: ${op} ${key} failed: ${(e as Error)?.message ?? String(e)}`, e);

  return {
    async get(key) {
      const p = pathOf(key);
      try {
        return new Uint8Array(await readFile(p));
      } catch (e) {
        if (isMissing(e)) return undefined;
        throw fail("get", key, e);
      }
    },

    async put(key, bytes) {
      const p = pathOf(key);
      const tmp = join(dirname(p), `${TMP_PREFIX}${randomBytes(6).toString("hex")}`);
      try {
        await mkdir(dirname(p), { recursive: true });
        await writeFile(tmp, bytes, { flush: true });
        await rename(tmp, p);
      } catch (e) {
        await rm(tmp, { force: true }).catch(() => {});
        throw fail("put", key, e);
      }
    },

    async delete(key) {
      const p = pathOf(key);
      try {
        await unlink(p);
      } catch (e) {
        if (!isMissing(e)) throw fail("delete", key, e);
      }
    },

    async exists(key) {
      const p = pathOf(key);
      try {
        return (await stat(p)).isFile();
      } catch (e) {
        if (isMissing(e)) return false;
        throw fail("stat", key, e);
      }
    },

    async list(prefix) {
      // A prefix need not end at a folder boundary ("nose-print-photo/did:x/image_"),
      // so walk the deepest folder it names and filter.
      const cut = prefix.lastIndexOf("/");
      const dirKey = cut >= 0 ? prefix.slice(0, cut) : "";
      const start = dirKey === "" ? root : pathOf(dirKey);
      const out: string[] = [];
      const walk = async (dir: string): Promise<void> => {
        let entries;
        try {
          entries = await readdir(dir, { withFileTypes: true });
        } catch (e) {
          if (isMissing(e)) return;
          throw fail("list", prefix, e);
        }
        for (const entry of entries) {
          if (entry.name.startsWith(TMP_PREFIX)) continue;
          const full = join(dir, entry.name);
          if (entry.isDirectory()) await walk(full);
          else if (entry.isFile()) {
            const key = relative(root, full).split(sep).join("/");
            if (key.startsWith(prefix)) out.push(key);
          }
        }
      };
      await walk(start);
      return out.sort();
    },

    async ping() {
      try {
        await mkdir(root, { recursive: true });
      } catch (e) {
        throw fail("open", root, e);
      }
    },
  };
}
