import type { Logger } from "../log.js";
import { REFUSED_PREFIX } from "../storage/keys.js";
import type { ObjectStore } from "../storage/object-store.js";
import { firstKeptDay } from "./refused-photos.js";

/** How often each replica purges (every replica may: deleting what is gone is a no-op). */
export const REFUSED_SWEEP_MS = 60 * 60 * 1000;

/**
 * Deletes every object under refused-registrations/{day}/ for the days
 * before the retention, whatever the folder holds (a torn write included).
 * Returns how many objects and folders went.
 */
export async function purgeRefusedPhotos(
  store: ObjectStore,
  retentionDays: number,
  now = new Date(),
): Promise<{ objects: number; folders: number; before: string }> {
  const before = firstKeptDay(retentionDays, now);
  const folders = new Set<string>();
  let objects = 0;
  for (const key of await store.list(`${REFUSED_PREFIX}/`)) {
    const [, day, id] = key.split("/");
    // Day folders sort as dates; anything not shaped as one is left alone.
    if (!/^\d{4}-\d{2}-\d{2}$/.test(day ?? "") || day >= before) continue;
    await store.delete(key);
    objects++;
    folders.add(`${day}/${id}`);
  }
  return { objects, folders: folders.size, before };
}

/** Purges at start and then every REFUSED_SWEEP_MS; failures are logged and retried at the next turn. */
export function startRefusedPhotoSweep(o: { store: ObjectStore; retentionDays: number; log: Logger }): { close(): void } {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let closed = false;
  const run = () =>
    purgeRefusedPhotos(o.store, o.retentionDays)
      .then(
        (r) => {
          if (r.objects > 0) o.log.info("refused registration photos purged", { ...r, retentionDays: o.retentionDays });
        },
        (e) => o.log.warn("purging refused registration photos failed; will retry", { err: e, retryInMs: REFUSED_SWEEP_MS }),
      )
      .finally(() => {
        if (!closed) (timer = setTimeout(run, REFUSED_SWEEP_MS)).unref?.();
      });
  void run();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
    },
  };
}
