import { setTrainingConsent } from "./consent.js";
import { createContext, type FlowDeps } from "./context.js";
import { DuplicatePetError, InconsistentPhotosError, supersededError } from "./errors.js";
import { identifyPet } from "./identify.js";
import { registerPet } from "./register.js";
import { migrateStale, reembedStale } from "./reembed.js";
import { approveTransfer } from "./transfer.js";
import type { Flows } from "./types.js";
import { compareWithStoredImage, verifyPet } from "./verify.js";

export { DuplicatePetError, InconsistentPhotosError, setTrainingConsent, supersededError };
export type { FlowDeps } from "./context.js";
export type * from "./types.js";

/**
 * The nose-print use cases on one model, independent of the RPC layer: plain
 * values in, plain values out, failures thrown as MLError. Each use case is a
 * function of its own file (register.ts, verify.ts, identify.ts, transfer.ts,
 * reembed.ts) taking the shared context (context.ts); this binds them to one
 * context, which keeps per-process state, so one set is made per loaded model.
 */
export function createFlows(deps: FlowDeps): Flows {
  const ctx = createContext(deps);
  return {
    reembedStale: (batch) => reembedStale(ctx, batch),
    migrateStale: (opts) => migrateStale(ctx, opts),
    compareWithStoredImage: (req) => compareWithStoredImage(ctx, req),
    registerPet: (req) => registerPet(ctx, req),
    verifyPet: (req) => verifyPet(ctx, req),
    identifyPet: (req) => identifyPet(ctx, req),
    approveTransfer: (req) => approveTransfer(ctx, req),
  };
}
