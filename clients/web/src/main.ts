// The dashboard's shell: the API key prompt, navigation between the pages (hash routes, so a
// reload keeps the page), and "Forget key".
import "./style.css";
import { Code } from "@connectrpc/connect";
import { sandboxes } from "./api";
import { artifactsPage } from "./artifacts";
import { detailsPage } from "./details";
import { el, field, replace } from "./dom";
import { errorBlock, hasCode } from "./errors";
import { apiKey, forgetKey, rememberKey } from "./key";
import { notify } from "./notice";
import { poolsPage } from "./pools";
import { sandboxesPage } from "./sandboxes";

const main = document.getElementById("main") as HTMLElement;
const nav = document.getElementById("nav") as HTMLElement;
const forget = document.getElementById("forget-key") as HTMLButtonElement;
let stopPage: () => void = () => {};

forget.addEventListener("click", () => {
  forgetKey();
  notify("The API key was forgotten.");
  showKeyPrompt();
});
// The skip link focuses the content instead of changing the hash (which routes).
document.querySelector(".skip")?.addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});
window.addEventListener("hashchange", () => {
  if (apiKey()) route();
});

function showKeyPrompt(): void {
  stopPage();
  stopPage = () => {};
  nav.hidden = true;
  forget.hidden = true;
  const input = el("input", { type: "password", name: "api-key", autocomplete: "off", required: true, spellcheck: "false" });
  const error = el("div");
  const form = el(
    "form",
    { class: "key-form", "aria-label": "Sign in" },
    el("h2", {}, "Sign in with an API key"),
    el("p", {}, "The key is kept in this tab's session storage only, and sent as an authorization header to this server."),
    field("API key", input),
    el("button", { type: "submit" }, "Use this key"),
    error,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void signIn(input.value.trim(), error);
  });
  replace(main, form);
  input.focus();
}

async function signIn(key: string, error: HTMLElement): Promise<void> {
  rememberKey(key);
  try {
    await sandboxes.listTemplates({});
  } catch (failure) {
    if (hasCode(failure, Code.Unauthenticated) || hasCode(failure, Code.PermissionDenied)) forgetKey();
    replace(error, errorBlock("Checking the key", failure));
    if (!apiKey()) return;
  }
  replace(error);
  notify("");
  route();
}

function route(): void {
  stopPage();
  nav.hidden = false;
  forget.hidden = false;
  const path = window.location.hash.replace(/^#/, "") || "/sandboxes";
  const detail = /^\/sandboxes\/([^/]+)$/.exec(path);
  for (const link of nav.querySelectorAll("a")) {
    const current = path.startsWith(link.getAttribute("href")?.slice(1) ?? "\0");
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (detail) stopPage = detailsPage(main, decodeURIComponent(detail[1]));
  else if (path === "/artifacts") stopPage = artifactsPage(main);
  else if (path === "/pools") stopPage = poolsPage(main);
  else stopPage = sandboxesPage(main);
}

if (apiKey()) route();
else showKeyPrompt();
