// Example sandboxd client in TypeScript: creates a sandbox, lists it, watches its lifecycle
// events on a server stream while destroying it, and decodes the ErrorInfo and BadRequest
// details of failed calls. The stubs are loaded from the repository's proto/ at run time by
// @grpc/proto-loader (nothing generated is committed).
//
//   npm install && npm run example -- --target 127.0.0.1:50051 --api-key sbx_...
//
// Exits non-zero when an expectation fails; prints "typescript client example: OK" at the end.

import { fileURLToPath } from "node:url";
import path from "node:path";
import { parseArgs } from "node:util";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

import { richError } from "./rich_errors.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const protoRoot = path.resolve(here, "..", "..", "..", "proto");
const DEADLINE_MS = 120_000;
const UPPER_SNAKE_CASE = /^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$/;

function expect(condition: boolean, message: string): asserts condition {
  if (!condition) {
    throw new Error(`expectation failed: ${message}`);
  }
}

const { values } = parseArgs({
  options: {
    target: { type: "string" },
    "api-key": { type: "string", default: process.env.SANDBOXD_API_KEY },
    template: { type: "string", default: "discord-guild" },
  },
});
const target = values.target;
const apiKey = values["api-key"];
if (!target || !apiKey) {
  console.error("usage: example --target HOST:PORT --api-key KEY (or $SANDBOXD_API_KEY)");
  process.exit(2);
}

const definition = protoLoader.loadSync(
  ["sandboxd/v1/sandbox.proto", "sandboxd/v1/routing.proto", "sandboxd/v1/sync.proto"],
  { includeDirs: [protoRoot], keepCase: true, longs: String, enums: String, defaults: true },
);
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const api = grpc.loadPackageDefinition(definition) as any;
// Plaintext, as `sandboxd dev` serves on loopback: grpc-js refuses call credentials over an
// insecure channel, so the key goes on each call's metadata.
const control = new api.sandboxd.v1.SandboxControl(target, grpc.credentials.createInsecure());

function auth(): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${apiKey}`);
  return metadata;
}

function deadline(): { deadline: number } {
  return { deadline: Date.now() + DEADLINE_MS };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function unary<T>(method: string, request: object): Promise<T> {
  return new Promise((resolve, reject) => {
    control[method](request, auth(), deadline(), (error: grpc.ServiceError | null, response: T) =>
      error ? reject(error) : resolve(response),
    );
  });
}

async function failure(method: string, request: object): Promise<grpc.ServiceError> {
  try {
    await unary(method, request);
  } catch (error) {
    return error as grpc.ServiceError;
  }
  throw new Error(`${method} was expected to fail`);
}

interface Sandbox {
  sandbox_id: string;
  name: string;
  state: string;
}

async function main(): Promise<void> {
  const name = `ts-example-${Math.random().toString(16).slice(2, 10)}`;
  console.log(`CreateSandbox template=${values.template} name=${name}`);
  const created = await unary<Sandbox>("CreateSandbox", {
    template: values.template,
    name,
    labels: { client: "typescript" },
  });
  expect(created.name === name, `created sandbox is named ${created.name}`);
  console.log(`  ${created.sandbox_id} ${created.state}`);

  const listed = await unary<{ sandboxes: Sandbox[] }>("ListSandboxes", {
    labels: { client: "typescript" },
  });
  expect(
    listed.sandboxes.some((sandbox) => sandbox.sandbox_id === created.sandbox_id),
    "ListSandboxes returns the new sandbox",
  );
  console.log(`ListSandboxes: ${listed.sandboxes.length} with label client=typescript`);

  // Watch the sandbox's lifecycle events on a server stream while destroying it.
  const stream = control.WatchSandboxes({ sandbox_id: created.sandbox_id }, auth());
  const destroyedSeen = new Promise<string[]>((resolve, reject) => {
    const states: string[] = [];
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    stream.on("data", (response: any) => {
      const state = response.event?.sandbox?.state as string;
      states.push(state);
      if (state === "SANDBOX_STATE_DESTROYED") {
        resolve(states);
      }
    });
    stream.on("error", (error: grpc.ServiceError) => {
      if (error.code !== grpc.status.CANCELLED) {
        reject(error);
      }
    });
  });
  // The stream is open once the server has sent its headers.
  await new Promise<void>((resolve) => stream.once("metadata", () => resolve()));
  const destroyed = await unary<Sandbox>("DestroySandbox", {
    sandbox_id: created.sandbox_id,
    reason: "typescript example",
  });
  expect(destroyed.state === "SANDBOX_STATE_DESTROYED", `destroy answered ${destroyed.state}`);
  const states = await withTimeout(destroyedSeen, 30_000, "the watch to deliver DESTROYED");
  stream.cancel();
  console.log(`WatchSandboxes delivered: ${states.join(" → ")}`);

  // Errors carry google.rpc.ErrorInfo, and bad fields a BadRequest.
  const missing = await failure("GetSandbox", { sandbox_id: "00000000-0000-7000-8000-000000000000" });
  expect(missing.code === grpc.status.NOT_FOUND, `GetSandbox of nothing: code ${missing.code}`);
  const notFound = richError(missing);
  expect(notFound?.errorInfo?.domain === "sandboxd", "ErrorInfo.domain is sandboxd");
  expect(UPPER_SNAKE_CASE.test(notFound.errorInfo.reason), "ErrorInfo.reason is UPPER_SNAKE_CASE");
  console.log(`  NOT_FOUND: reason=${notFound.errorInfo.reason}`);

  const invalid = await failure("CreateSandbox", { template: "discord-guild", name: "Not A DNS Label" });
  expect(invalid.code === grpc.status.INVALID_ARGUMENT, `bad name: code ${invalid.code}`);
  const bad = richError(invalid);
  expect(bad?.errorInfo?.reason === "INVALID_ARGUMENT", "the bad name's reason");
  expect(
    bad.fieldViolations.some((violation) => violation.field === "name"),
    `BadRequest names the field: ${JSON.stringify(bad.fieldViolations)}`,
  );
  console.log(`  INVALID_ARGUMENT: ${bad.fieldViolations.map((v) => `${v.field}: ${v.description}`).join("; ")}`);
  control.close();
  console.log("typescript client example: OK");
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([
    promise,
    new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms).unref()),
  ]);
}

main().catch((error) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
