// Errors shown readably: the gRPC code, the message, and the google.rpc details sandboxd sends
// (ErrorInfo reason, BadRequest field violations).
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb";
import { el } from "./dom";

export interface Described {
  code: string;
  message: string;
  reason: string;
  violations: string[];
}

export function describe(error: unknown): Described {
  const connect = ConnectError.from(error);
  const info = connect.findDetails(ErrorInfoSchema)[0];
  const violations = connect
    .findDetails(BadRequestSchema)
    .flatMap((bad) => bad.fieldViolations.map((v) => `${v.field}: ${v.description}`));
  return {
    code: Code[connect.code] ?? String(connect.code),
    message: connect.rawMessage,
    reason: info?.reason ?? "",
    violations,
  };
}

/** Whether `error` is a gRPC error with `code`. */
export function hasCode(error: unknown, code: Code): boolean {
  return ConnectError.from(error).code === code;
}

/** An alert block for `error`, prefixed with what was being done. */
export function errorBlock(doing: string, error: unknown): HTMLElement {
  const d = describe(error);
  const block = el(
    "div",
    { class: "error", role: "alert" },
    el("strong", {}, `${doing} failed: `),
    `${d.code}${d.reason ? ` (${d.reason})` : ""}: ${d.message}`,
  );
  if (d.violations.length > 0) {
    const list = el("ul");
    for (const violation of d.violations) list.appendChild(el("li", {}, violation));
    block.appendChild(list);
  }
  return block;
}
