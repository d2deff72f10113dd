import type { MessageInitShape } from "@bufbuild/protobuf";
import type { Config } from "./config.js";
import type { EmbedImage } from "./embed-image.js";
import { serviceUnavailable, toWireError } from "./errors.js";
import type { Logger } from "./log.js";
import type { ModelHolder } from "./model/model-holder.js";
import type {
  ApproveTransferRequest,
  ApproveTransferResponseSchema,
  IdentifyPetRequest,
  IdentifyPetResponseSchema,
  RegisterPetRequest,
  RegisterPetResponseSchema,
  VerifyPetRequest,
  VerifyPetResponseSchema,
} from "../gen/nose_embedder_pb.js";

export interface RegistryHandlers {
  compareWithStoredImage(req: { imageKey: string; petDid: string }): Promise<{ similarity: number; cosineSimilarity: number; euclideanDistance: number }>;
  registerPet(req: RegisterPetRequest): Promise<MessageInitShape<typeof RegisterPetResponseSchema>>;
  verifyPet(req: VerifyPetRequest): Promise<MessageInitShape<typeof VerifyPetResponseSchema>>;
  identifyPet(req: IdentifyPetRequest): Promise<MessageInitShape<typeof IdentifyPetResponseSchema>>;
  approveTransfer(req: ApproveTransferRequest): Promise<MessageInitShape<typeof ApproveTransferResponseSchema>>;
  close(): Promise<void>;
}

export function openRegistry(_config: Config, _model: ModelHolder, _embed: EmbedImage, _log: Logger): RegistryHandlers {
  const unavailable = () => serviceUnavailable("pet registry is not available on this server yet");
  const fail = async () => toWireError(unavailable());
  return {
    compareWithStoredImage: async () => {
      throw unavailable();
    },
    registerPet: fail,
    verifyPet: fail,
    identifyPet: fail,
    approveTransfer: fail,
    close: async () => {},
  };
}
