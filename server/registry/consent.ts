import { vectorNotFound } from "../errors.js";
import { checkDid, consentValue, MAX_GUARDIAN_LENGTH, MAX_ID_LENGTH, optionalText } from "./input.js";
import type { ConsentChange, Registry } from "./registry.js";
import type { ConsentRequest } from "./types.js";

/**
 * Grants or withdraws a registered pet's training consent, audited as kind
 * 'consent' with the previous and the new value. Needs no model, so it takes
 * the registry rather than a flow context: it answers while a model is still
 * loading. `modelVersion` only labels the audit row.
 */
export async function setTrainingConsent(registry: Registry, req: ConsentRequest, modelVersion: string): Promise<ConsentChange> {
  const petDid = checkDid(req?.petDid);
  const trainingConsent = consentValue(req?.trainingConsent);
  const requestedBy = optionalText(req?.requestedBy, "requested by", MAX_GUARDIAN_LENGTH);
  const requestId = optionalText(req?.requestId, "request id", MAX_ID_LENGTH);
  const change = await registry.setTrainingConsent(petDid, trainingConsent, { requestedBy, requestId, modelVersion });
  if (!change) throw vectorNotFound(`no registered pet ${petDid}`);
  return change;
}
