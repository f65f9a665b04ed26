// Decodes the rich error model of sandboxd (google.rpc.Status with ErrorInfo and BadRequest,
// AIP-193) from a failed call's `grpc-status-details-bin` trailer.

import type { ServiceError } from "@grpc/grpc-js";
import protobuf from "protobufjs";

// The three messages of google/rpc/status.proto and error_details.proto this client reads.
const RPC_PROTOS = `
syntax = "proto3";
package google.rpc;
message Any { string type_url = 1; bytes value = 2; }
message Status { int32 code = 1; string message = 2; repeated Any details = 3; }
message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
message FieldViolation { string field = 1; string description = 2; }
message BadRequest { repeated FieldViolation field_violations = 1; }
`;

const root = protobuf.parse(RPC_PROTOS, { keepCase: true }).root;
const StatusType = root.lookupType("google.rpc.Status");
const ErrorInfoType = root.lookupType("google.rpc.ErrorInfo");
const BadRequestType = root.lookupType("google.rpc.BadRequest");

export interface RichError {
  code: number;
  message: string;
  errorInfo?: { reason: string; domain: string; metadata: Record<string, string> };
  fieldViolations: { field: string; description: string }[];
}

interface AnyMessage {
  type_url: string;
  value: Uint8Array;
}

/** The details of a failed call, or undefined when the server sent none. */
export function richError(error: ServiceError): RichError | undefined {
  const [bin] = error.metadata.get("grpc-status-details-bin");
  if (bin === undefined) {
    return undefined;
  }
  const bytes = new Uint8Array(typeof bin === "string" ? Buffer.from(bin, "base64") : bin);
  const status = StatusType.toObject(StatusType.decode(bytes)) as {
    code?: number;
    message?: string;
    details?: AnyMessage[];
  };
  const result: RichError = {
    code: status.code ?? 0,
    message: status.message ?? "",
    fieldViolations: [],
  };
  for (const detail of status.details ?? []) {
    if (detail.type_url.endsWith("/google.rpc.ErrorInfo")) {
      const info = ErrorInfoType.toObject(ErrorInfoType.decode(detail.value)) as {
        reason?: string;
        domain?: string;
        metadata?: Record<string, string>;
      };
      result.errorInfo = {
        reason: info.reason ?? "",
        domain: info.domain ?? "",
        metadata: info.metadata ?? {},
      };
    } else if (detail.type_url.endsWith("/google.rpc.BadRequest")) {
      const bad = BadRequestType.toObject(BadRequestType.decode(detail.value)) as {
        field_violations?: { field?: string; description?: string }[];
      };
      for (const violation of bad.field_violations ?? []) {
        result.fieldViolations.push({
          field: violation.field ?? "",
          description: violation.description ?? "",
        });
      }
    }
  }
  return result;
}
