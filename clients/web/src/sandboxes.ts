// The sandboxes list: filters, live updates from WatchSandboxes, create, extend and destroy.
import { create } from "@bufbuild/protobuf";
import { DurationSchema, timestampMs } from "@bufbuild/protobuf/wkt";
import {
  SandboxState,
  type Sandbox,
  type Template,
} from "./gen/sandboxd/v1/sandbox_pb";
import { sandboxes } from "./api";
import { button, el, field, replace } from "./dom";
import { errorBlock } from "./errors";
import { enumName, labelText, parseLabels, time } from "./format";
import { notify } from "./notice";
import { keepWatching } from "./watch";

interface Filters {
  state: SandboxState | undefined;
  template: string;
  labels: Record<string, string>;
}

const STATES = Object.values(SandboxState).filter(
  (v): v is SandboxState => typeof v === "number" && v !== SandboxState.UNSPECIFIED,
);

export function stateName(state: SandboxState): string {
  return enumName(SandboxState, state);
}

/** Renders the page into `root`; returns the function that stops its watch. */
export function sandboxesPage(root: HTMLElement): () => void {
  const known = new Map<string, Sandbox>();
  let filters: Filters = { state: undefined, template: "", labels: {} };
  let templates: Template[] = [];

  const live = el("span", { class: "live", "data-live": "false" }, "connecting…");
  const listError = el("div");
  const rows = el("tbody");
  const table = el(
    "table",
    { class: "sandboxes" },
    el("caption", {}, "Sandboxes, newest first"),
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        ...["Name", "Template", "State", "Expires", "Labels", "Actions"].map((h) =>
          el("th", { scope: "col" }, h),
        ),
      ),
    ),
    rows,
  );

  const filterState = el("select", { name: "state" }, el("option", { value: "" }, "any"));
  for (const state of STATES) filterState.appendChild(el("option", { value: String(state) }, stateName(state)));
  const filterTemplate = el("select", { name: "template" }, el("option", { value: "" }, "any"));
  const filterLabels = el("input", { name: "labels", placeholder: "team=core,env=dev", autocomplete: "off" });
  const filterError = el("div");
  const filterForm = el(
    "form",
    { class: "filters", "aria-label": "Filter sandboxes" },
    field("State", filterState),
    field("Template", filterTemplate),
    field("Labels", filterLabels),
    el("button", { type: "submit" }, "Apply filters"),
    filterError,
  );
  filterForm.addEventListener("submit", (event) => {
    event.preventDefault();
    try {
      filters = {
        state: filterState.value === "" ? undefined : (Number(filterState.value) as SandboxState),
        template: filterTemplate.value,
        labels: parseLabels(filterLabels.value),
      };
      replace(filterError);
    } catch (error) {
      replace(filterError, el("div", { class: "error", role: "alert" }, String((error as Error).message)));
      return;
    }
    void reload();
  });

  const createTemplate = el("select", { name: "template", required: true });
  const createName = el("input", { name: "name", autocomplete: "off", placeholder: "optional" });
  const createTtl = el("input", { name: "ttl", type: "number", min: "1", step: "1", placeholder: "template default" });
  const createError = el("div");
  const createForm = el(
    "form",
    { class: "create", "aria-label": "Create a sandbox" },
    field("Template", createTemplate),
    field("Name", createName),
    field("TTL (hours)", createTtl),
    el("button", { type: "submit" }, "Create sandbox"),
    createError,
  );
  createForm.addEventListener("submit", (event) => {
    event.preventDefault();
    void createSandbox();
  });

  replace(
    root,
    el("h2", {}, "Sandboxes ", live),
    el("section", { class: "panel" }, el("h3", {}, "Create"), createForm),
    el("section", { class: "panel" }, el("h3", {}, "Filter"), filterForm),
    listError,
    el("div", { class: "scroll" }, table),
  );

  async function loadTemplates(): Promise<void> {
    try {
      templates = (await sandboxes.listTemplates({})).templates;
    } catch (error) {
      replace(createError, errorBlock("Loading templates", error));
      return;
    }
    for (const select of [createTemplate, filterTemplate]) {
      for (const template of templates) {
        select.appendChild(el("option", { value: template.name }, template.name));
      }
    }
  }

  async function reload(): Promise<void> {
    try {
      const page = await sandboxes.listSandboxes({
        pageSize: 200,
        states: filters.state === undefined ? [] : [filters.state],
        template: filters.template,
        labels: filters.labels,
      });
      // Watch events newer than this listing win over it.
      const previous = new Map(known);
      known.clear();
      for (const sandbox of page.sandboxes) upsertInto(known, previous.get(sandbox.sandboxId), sandbox);
      replace(listError);
      render();
    } catch (error) {
      replace(listError, errorBlock("Listing sandboxes", error));
    }
  }

  function upsertInto(map: Map<string, Sandbox>, current: Sandbox | undefined, incoming: Sandbox): void {
    const newer = !current || updated(incoming) >= updated(current);
    map.set(incoming.sandboxId, newer ? incoming : current);
  }

  function matches(sandbox: Sandbox): boolean {
    if (filters.state !== undefined && sandbox.state !== filters.state) return false;
    if (filters.template !== "" && sandbox.template !== filters.template) return false;
    return Object.entries(filters.labels).every(([k, v]) => sandbox.labels[k] === v);
  }

  // Rows are kept per sandbox and rebuilt only when that sandbox changed, so an open destroy
  // confirmation survives other sandboxes' events.
  const rendered = new Map<string, { sandbox: Sandbox; row: HTMLTableRowElement }>();

  function render(): void {
    const shown = [...known.values()].filter(matches).sort((a, b) => created(b) - created(a));
    const wanted = shown.map((sandbox) => {
      const cached = rendered.get(sandbox.sandboxId);
      if (cached && cached.sandbox === sandbox) return cached.row;
      const fresh = row(sandbox);
      cached?.row.replaceWith(fresh);
      rendered.set(sandbox.sandboxId, { sandbox, row: fresh });
      return fresh;
    });
    if (wanted.length === 0) {
      replace(rows, el("tr", {}, el("td", { colspan: "6" }, "No sandboxes match.")));
      return;
    }
    const current = [...rows.children];
    if (current.length !== wanted.length || current.some((node, i) => node !== wanted[i])) {
      replace(rows, ...wanted);
    }
  }

  function row(sandbox: Sandbox): HTMLTableRowElement {
    const name = sandbox.name || sandbox.sandboxId;
    const actions = el("div", { class: "actions" });
    const gone = sandbox.state === SandboxState.DESTROYED || sandbox.state === SandboxState.DESTROYING;
    const showActions = (): void =>
      replace(
        actions,
        el("a", { href: `#/sandboxes/${sandbox.sandboxId}` }, "Details"),
        !gone && button("Extend 1 h", () => void extend(sandbox)),
        !gone && button("Destroy…", askToDestroy, { class: "danger" }),
      );
    const askToDestroy = (): void => {
      const confirm = button("Confirm destroy", () => void destroy(sandbox), { class: "danger" });
      replace(
        actions,
        el("span", {}, `Destroy ${name}?`),
        confirm,
        button("Cancel", showActions),
      );
      confirm.focus();
    };
    showActions();
    const state = stateName(sandbox.state);
    return el(
      "tr",
      { "data-sandbox-id": sandbox.sandboxId, "data-name": sandbox.name, "data-state": state },
      el("th", { scope: "row" }, el("a", { href: `#/sandboxes/${sandbox.sandboxId}` }, name)),
      el("td", { "data-label": "Template" }, sandbox.template),
      el("td", { "data-label": "State" }, el("span", { class: `state state-${state}` }, state)),
      el("td", { "data-label": "Expires" }, time(sandbox.expireTime)),
      el("td", { "data-label": "Labels" }, labelText(sandbox.labels)),
      el("td", {}, actions),
    );
  }

  async function createSandbox(): Promise<void> {
    replace(createError);
    const hours = createTtl.value === "" ? undefined : Number(createTtl.value);
    try {
      const sandbox = await sandboxes.createSandbox({
        template: createTemplate.value,
        name: createName.value.trim(),
        ttl: hours === undefined ? undefined : create(DurationSchema, { seconds: BigInt(Math.round(hours * 3600)) }),
        requestId: crypto.randomUUID(),
      });
      notify(`Created ${sandbox.name || sandbox.sandboxId} (${stateName(sandbox.state)}).`);
      createName.value = "";
    } catch (error) {
      replace(createError, errorBlock("Creating the sandbox", error));
    }
  }

  async function extend(sandbox: Sandbox): Promise<void> {
    try {
      const reply = await sandboxes.extendSandbox({
        sandboxId: sandbox.sandboxId,
        extension: { case: "ttlExtension", value: create(DurationSchema, { seconds: 3600n }) },
      });
      const capped = reply.capped ? " (capped at the maximum)" : "";
      notify(`${sandbox.name || sandbox.sandboxId} now expires ${time(reply.expireTime)}${capped}.`);
    } catch (error) {
      notify(errorBlock("Extending", error));
    }
  }

  async function destroy(sandbox: Sandbox): Promise<void> {
    try {
      await sandboxes.destroySandbox({ sandboxId: sandbox.sandboxId, reason: "destroyed from the dashboard" });
      notify(`Destroying ${sandbox.name || sandbox.sandboxId}.`);
    } catch (error) {
      notify(errorBlock("Destroying", error));
    }
  }

  void loadTemplates();
  return keepWatching((resumeToken, options) => sandboxes.watchSandboxes({ resumeToken }, options), {
    onReset: () => void reload(),
    onStatus: (isLive, error) => {
      live.dataset.live = String(isLive);
      live.textContent = isLive ? "live" : `reconnecting… (${error instanceof Error ? error.message : ""})`;
    },
    onMessage: (message) => {
      const sandbox = message.event?.sandbox;
      if (!sandbox) return;
      upsertInto(known, known.get(sandbox.sandboxId), sandbox);
      render();
    },
  });
}

function updated(sandbox: Sandbox): number {
  return sandbox.updateTime ? timestampMs(sandbox.updateTime) : 0;
}

function created(sandbox: Sandbox): number {
  return sandbox.createTime ? timestampMs(sandbox.createTime) : 0;
}
