import { verdictOf } from "../../shared/similarity.js";
import { invalidRequest } from "../errors.js";
import { throwIfCancelled } from "../observe/request-context.js";
import { geometryDetail, type FlowContext } from "./context.js";
import { checkDid, MAX_GUARDIAN_LENGTH, MAX_ID_LENGTH, optionalText, requiredText, shown } from "./input.js";
import type { AuditEntry } from "./registry.js";
import type { TransferRequest, TransferResult } from "./types.js";
import { matchPet } from "./verify.js";

/**
 * A change of guardian, approved when a new photo verifies as the pet (SAME):
 * the approval row and its audit are written together. With a request id a
 * repeat returns the first approval; the id is refused for another transfer.
 */
export async function approveTransfer(ctx: FlowContext, req: TransferRequest): Promise<TransferResult> {
  const { registry, modelVersion } = ctx;
  const petDid = checkDid(req?.petDid);
  const fromGuardian = requiredText(req?.fromGuardian, "fromGuardian", MAX_GUARDIAN_LENGTH);
  const toGuardian = requiredText(req?.toGuardian, "toGuardian", MAX_GUARDIAN_LENGTH);
  if (fromGuardian === toGuardian) throw invalidRequest("fromGuardian and toGuardian are the same");
  const requestId = optionalText(req?.requestId, "request id", MAX_ID_LENGTH);

  if (requestId) {
    const prior = await registry.findApproval(requestId);
    if (prior) {
      if (prior.petDid !== petDid || prior.fromGuardian !== fromGuardian || prior.toGuardian !== toGuardian) {
        throw invalidRequest(`request id ${shown(requestId)} was already used for another transfer`);
      }
      return {
        approved: true,
        approvalId: prior.approvalId,
        approvedAt: prior.approvedAt.toISOString(),
        cosine: prior.cosine,
        cosineSimilarity: prior.cosineSimilarity,
        euclideanDistance: prior.euclideanDistance,
        similarity: prior.similarity,
        verdict: verdictOf(prior.similarity),
        storedImageKey: "",
        modelVersion: prior.modelVersion,
      };
    }
  }

  const { match, imageKey: key, storedImageKey } = await matchPet(ctx, petDid, req?.photo);
  const audit: AuditEntry = {
    kind: "transfer",
    petDid,
    requestedBy: toGuardian,
    requestId,
    similarity: match.similarity,
    cosine: match.cosine,
    verdict: match.verdict,
    modelVersion,
    detail: {
      fromGuardian,
      toGuardian,
      imageKey: key ?? storedImageKey,
      approved: match.verdict === "SAME",
      ...geometryDetail(match.geometry),
    },
  };
  if (match.verdict !== "SAME") {
    await registry.addAudit(audit);
    return { ...match, approved: false, approvalId: "", approvedAt: "", storedImageKey, modelVersion };
  }
  throwIfCancelled();
  const record = await registry.insertApproval(
    {
      petDid,
      fromGuardian,
      toGuardian,
      similarity: match.similarity,
      cosine: match.cosine,
      cosineSimilarity: match.cosineSimilarity,
      euclideanDistance: match.euclideanDistance,
      modelVersion,
      requestId,
    },
    audit,
  );
  return {
    ...match,
    approved: true,
    approvalId: record.approvalId,
    approvedAt: record.approvedAt.toISOString(),
    storedImageKey,
    modelVersion,
  };
}
