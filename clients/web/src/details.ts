// One sandbox: its health checks, connection details (never secrets), audit trail, guild
// routes and workspace sync status. Each panel loads on its own and shows its own error.
import type { JsonValue } from "@bufbuild/protobuf";
import { HealthLevel, type ConnectionDetails } from "./gen/sandboxd/v1/sandbox_pb";
import type { SyncResult } from "./gen/sandboxd/v1/sync_pb";
import { routing, sandboxes, sync } from "./api";
import { button, definitions, el, replace } from "./dom";
import { errorBlock } from "./errors";
import { bytes, duration, enumName, labelText, time } from "./format";
import { stateName } from "./sandboxes";

/** Environment variables whose values are secrets or carry them (DSNs with passwords). */
const SECRET_NAME = /PASSWORD|SECRET|TOKEN|KEY|URL|DSN|CREDENTIAL/i;

export function detailsPage(root: HTMLElement, sandboxId: string): () => void {
  const summary = panel("Sandbox");
  const health = panel("Health");
  const connection = panel("Connection details");
  const audit = panel("Audit trail");
  const routes = panel("Guild routes");
  const syncStatus = panel("Workspace sync");
  replace(
    root,
    el("p", {}, el("a", { href: "#/sandboxes" }, "← All sandboxes")),
    el("h2", {}, "Sandbox ", el("code", {}, sandboxId)),
    el("div", { class: "grid" }, summary.section, health.section, connection.section, routes.section, syncStatus.section),
    audit.section,
  );

  void load(summary, "Loading the sandbox", async () => {
    const s = await sandboxes.getSandbox({ selector: { case: "sandboxId", value: sandboxId } });
    return [
      definitions([
        ["Name", s.name],
        ["State", stateName(s.state)],
        ["Template", s.template],
        ["Owner", s.owner],
        ["Created", time(s.createTime)],
        ["Expires", time(s.expireTime)],
        ["Last activity", time(s.lastActivityTime)],
        ["Labels", labelText(s.labels)],
        ["From warm pool", s.fromPool ? "yes" : "no"],
        ["Last error", s.lastError],
        ["Destroy reason", s.destroyReason],
      ]),
    ];
  });

  void load(health, "Checking health", async () => {
    const h = await sandboxes.getSandboxHealth({ sandboxId });
    const rows = h.checks.map((check) =>
      el(
        "tr",
        {},
        el("th", { scope: "row" }, check.name),
        el("td", {}, levelBadge(check.level)),
        el("td", {}, check.detail),
        el("td", {}, duration(check.latency)),
      ),
    );
    return [
      el("p", {}, "Overall: ", levelBadge(h.level), ` (checked ${time(h.checkTime)})`),
      table(["Check", "Level", "Detail", "Latency"], rows),
    ];
  });

  void load(connection, "Loading connection details", async () => [
    connectionView(await sandboxes.getConnectionDetails({ sandboxId })),
  ]);

  void load(routes, "Listing guild routes", async () => {
    const page = await routing.listGuildRoutes({ sandboxId, pageSize: 100 });
    if (page.guildRoutes.length === 0) return [el("p", {}, "No guild is routed to this sandbox.")];
    const rows = page.guildRoutes.map((route) =>
      el("tr", {}, el("td", {}, route.guildId), el("td", {}, route.registeredBy), el("td", {}, time(route.createTime))),
    );
    return [table(["Guild", "Registered by", "Since"], rows)];
  });

  void load(syncStatus, "Loading sync status", async () => {
    const status = await sync.getSyncStatus({ sandboxId });
    return [syncView("Last push", status.lastPush), syncView("Last pull", status.lastPull)];
  });

  const auditRows = el("tbody");
  const more = el("div");
  const loadAudit = async (pageToken: string): Promise<void> => {
    try {
      const page = await sandboxes.listAuditEvents({ sandboxId, pageSize: 50, pageToken });
      for (const event of page.auditEvents) {
        auditRows.appendChild(
          el(
            "tr",
            {},
            el("td", {}, time(event.createTime)),
            el("td", {}, event.eventType),
            el("td", {}, event.actor),
            el("td", {}, el("code", {}, detailsText(event.details ?? null))),
          ),
        );
      }
      replace(more, page.nextPageToken && button("Older events", () => void loadAudit(page.nextPageToken)));
    } catch (error) {
      replace(more, errorBlock("Loading the audit trail", error));
    }
  };
  replace(audit.body, table(["Time", "Event", "Actor", "Details"], [], auditRows), more);
  void loadAudit("");

  return () => {};
}

interface Panel {
  section: HTMLElement;
  body: HTMLElement;
}

function panel(title: string): Panel {
  const body = el("div", {}, "Loading…");
  return { section: el("section", { class: "panel" }, el("h3", {}, title), body), body };
}

async function load(target: Panel, doing: string, build: () => Promise<Node[]>): Promise<void> {
  try {
    replace(target.body, ...(await build()));
  } catch (error) {
    replace(target.body, errorBlock(doing, error));
  }
}

function table(headers: string[], rows: HTMLElement[], body = el("tbody")): HTMLElement {
  for (const row of rows) body.appendChild(row);
  return el(
    "div",
    { class: "scroll" },
    el("table", {}, el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { scope: "col" }, h)))), body),
  );
}

function levelBadge(level: HealthLevel): HTMLElement {
  const name = enumName(HealthLevel, level);
  return el("span", { class: `level level-${name}` }, name);
}

/** Connection details without any secret: passwords, DSNs and secret-looking env values are
 * never put on the page, even when the server returned them. */
function connectionView(details: ConnectionDetails): HTMLElement {
  const env = Object.entries(details.env)
    .filter(([name]) => !SECRET_NAME.test(name))
    .map(([name, value]) => `${name}=${value}`)
    .join("\n");
  const hidden = Object.keys(details.env).filter((name) => SECRET_NAME.test(name));
  return el(
    "div",
    {},
    definitions([
      ["Schema", details.schema],
      ["search_path", details.searchPath],
      ["PostgreSQL role", details.roleName],
      ["Redis prefix", details.redisPrefix],
      ["Redis user", details.redisUser],
      ["Subject prefix", details.subjectPrefix],
      ["Object prefix", details.objectPrefix],
    ]),
    el("p", { class: "hint" }, "Passwords and connection URLs are never shown here; get them with sandboxctl."),
    env && el("pre", { class: "env" }, env),
    hidden.length > 0 && el("p", { class: "hint" }, `Not shown: ${hidden.join(", ")}`),
  );
}

function syncView(title: string, result: SyncResult | undefined): HTMLElement {
  if (!result) return el("p", {}, `${title}: never`);
  return el(
    "div",
    {},
    el("h4", {}, title),
    definitions([
      ["When", time(result.syncTime)],
      ["Skipped", result.skipped ? "yes (fresh enough)" : "no"],
      ["Files scanned", String(result.filesScanned)],
      ["Files transferred", String(result.filesTransferred)],
      ["Files deleted", String(result.filesDeleted)],
      ["Bytes", bytes(result.bytesTransferred)],
      ["Duration", duration(result.duration)],
    ]),
  );
}

function detailsText(json: JsonValue): string {
  return json === null ? "" : JSON.stringify(json);
}
