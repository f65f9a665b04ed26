// Warm-pool status per template (GetPoolStatus), refreshed on demand.
import { sandboxes } from "./api";
import { button, el, replace } from "./dom";
import { errorBlock } from "./errors";

export function poolsPage(root: HTMLElement): () => void {
  const body = el("div", {}, "Loading…");
  const refresh = async (): Promise<void> => {
    try {
      const { pools } = await sandboxes.getPoolStatus({});
      const rows = pools.map((pool) =>
        el(
          "tr",
          { "data-template": pool.template },
          el("th", { scope: "row" }, pool.template),
          el("td", {}, pool.enabled ? "on" : "off"),
          el("td", {}, String(pool.readyCount)),
          el("td", {}, String(pool.inUseCount)),
          el("td", {}, `${pool.minReady} / ${pool.maxSize}`),
          el("td", {}, String(pool.hits)),
          el("td", {}, String(pool.misses)),
          el("td", {}, `${(pool.reuseRate * 100).toFixed(0)} %`),
        ),
      );
      const headers = ["Template", "Pool", "Ready", "In use", "Min ready / max", "Hits", "Misses", "Reuse"];
      replace(
        body,
        el(
          "div",
          { class: "scroll" },
          el(
            "table",
            {},
            el("caption", {}, "Warm pools per template"),
            el("thead", {}, el("tr", {}, ...headers.map((h) => el("th", { scope: "col" }, h)))),
            el("tbody", {}, ...rows),
          ),
        ),
      );
    } catch (error) {
      replace(body, errorBlock("Loading pool status", error));
    }
  };
  replace(root, el("h2", {}, "Pools"), button("Refresh", () => void refresh()), body);
  void refresh();
  return () => {};
}
