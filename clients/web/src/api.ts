// The gRPC-Web clients of the page: the same services as the gRPC port, on the page's own
// origin, each call carrying the API key as `authorization: Bearer`.
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { SandboxControl } from "./gen/sandboxd/v1/sandbox_pb";
import { GuildRouting } from "./gen/sandboxd/v1/routing_pb";
import { SyncService } from "./gen/sandboxd/v1/sync_pb";
import { ArtifactService } from "./gen/sandboxd/v1/artifact_pb";
import { apiKey } from "./key";

const bearer: Interceptor = (next) => async (request) => {
  request.header.set("authorization", `Bearer ${apiKey() ?? ""}`);
  return next(request);
};

const transport = createGrpcWebTransport({
  baseUrl: window.location.origin,
  interceptors: [bearer],
});

export const sandboxes = createClient(SandboxControl, transport);
export const routing = createClient(GuildRouting, transport);
export const sync = createClient(SyncService, transport);
export const artifacts = createClient(ArtifactService, transport);
