// The dashboard's browser test, driven by tests/dashboard.rs against a real `sandboxd dev`:
// sign in with the key, create a sandbox from the page and see it arrive RUNNING without a
// reload, let the test publish artifacts through the API, approve one on the page and see it
// move to the reviewed list, then destroy the sandbox from the page and see it DESTROYED, and
// finally forget the key.
// Screenshots of the list and of the review queue at 1280 and 390 px go to SCREENSHOT_DIR.
//
// Talks to the Rust test over stdio: prints `sandbox-running <id>`, then reads one line
// `published <diff artifact id> <image artifact id>` (or `skip-artifacts <reason>`); prints
// `details-text <base64>`, the text of the sandbox's details page, for the test to check that
// no secret is on it.
// Every wait is on a condition (Playwright's auto-waiting selectors), never a fixed delay.
import { createInterface } from "node:readline";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const url = need("DASHBOARD_URL");
const key = need("API_KEY");
const shots = need("SCREENSHOT_DIR");
const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const name = process.env.SANDBOX_NAME ?? "e2e-review";
const WAIT = { timeout: 60_000 };

if (!existsSync(executablePath)) {
  fail(`chromium is not installed at ${executablePath} (apt-get install chromium, or set CHROMIUM)`);
}
mkdirSync(shots, { recursive: true });
const lines = createInterface({ input: process.stdin });
const stdin = lines[Symbol.asyncIterator]();

const browser = await chromium.launch({
  executablePath,
  // Chromium refuses to run as root with its sandbox on.
  args: process.getuid?.() === 0 ? ["--no-sandbox"] : [],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", (error) => console.error(`page error: ${error.message}`));
  await page.goto(url);

  // The app is the real one, served with its security headers.
  const index = await page.request.get(url);
  check(index.headers()["content-security-policy"]?.includes("script-src 'self'"), "the page has a strict CSP");

  // Without a key, the gRPC-Web API refuses (auth is the same as on the gRPC port).
  const anonymous = await page.evaluate(async () => {
    const response = await fetch("/sandboxd.v1.SandboxControl/ListTemplates", {
      method: "POST",
      headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" },
      body: new Uint8Array([0, 0, 0, 0, 0]),
    });
    const trailer = new TextDecoder().decode(new Uint8Array(await response.arrayBuffer()));
    return response.headers.get("grpc-status") ?? /grpc-status:\s*(\d+)/.exec(trailer)?.[1];
  });
  check(anonymous === "16", `an anonymous gRPC-Web call is UNAUTHENTICATED (got grpc-status ${anonymous})`);

  await page.getByLabel("API key").fill(key);
  await page.getByRole("button", { name: "Use this key" }).click();
  await page.waitForSelector('h2 .live[data-live="true"]', WAIT);
  // A reload would drop this marker; it is checked at the end.
  await page.evaluate(() => {
    window.__noReload = true;
  });

  const createForm = page.getByRole("form", { name: "Create a sandbox" });
  await createForm.getByLabel("Template").selectOption("discord-guild");
  await createForm.getByLabel("Name").fill(name);
  await createForm.getByRole("button", { name: "Create sandbox" }).click();
  const row = page.locator(`tr[data-name="${name}"]`);
  await page.waitForSelector(`tr[data-name="${name}"][data-state="RUNNING"]`, WAIT);
  const sandboxId = await row.getAttribute("data-sandbox-id");
  console.log(`sandbox-running ${sandboxId}`);
  await screenshots(page, "sandboxes");

  const [command, ...args] = ((await stdin.next()).value ?? "").split(" ");
  if (command === "published") {
    const [diffId, imageId] = args;
    await page.getByRole("link", { name: "Review queue" }).click();
    const diffCard = `#pending-artifacts article[data-artifact-id="${diffId}"]`;
    await page.waitForSelector(`${diffCard} .diff-add`, WAIT);
    await page.waitForSelector(`#pending-artifacts article[data-artifact-id="${imageId}"] img`, WAIT);
    await page.waitForFunction(
      (id) => document.querySelector(`article[data-artifact-id="${id}"] img`)?.naturalWidth > 0,
      imageId,
      WAIT,
    );
    await screenshots(page, "review-queue");
    const card = page.locator(diffCard);
    await card.getByLabel("Comment").fill("looks good (browser test)");
    await card.getByRole("button", { name: "Approve" }).click();
    await page.waitForSelector(`#reviewed-artifacts article[data-artifact-id="${diffId}"][data-review-state="APPROVED"]`, WAIT);
    check((await page.locator(diffCard).count()) === 0, "the approved artifact left the pending queue");
    console.log(`approved ${diffId}`);
    await page.getByRole("link", { name: "Sandboxes" }).click();
    await page.waitForSelector(`tr[data-name="${name}"]`, WAIT);
  } else {
    console.log(`artifact steps skipped: ${args.join(" ")}`);
  }

  // The details page: every panel loaded (health, connection details, audit trail).
  await row.getByRole("link", { name: "Details" }).click();
  await page.waitForFunction(
    () => {
      const text = document.querySelector("main")?.innerText ?? "";
      return text.includes("Overall:") && text.includes("Redis prefix") && text.includes("sandbox_created") && !text.includes("Loading…");
    },
    undefined,
    WAIT,
  );
  await screenshots(page, "details");
  const detailsText = await page.locator("main").innerText();
  console.log(`details-text ${Buffer.from(detailsText).toString("base64")}`);
  await page.getByRole("link", { name: "← All sandboxes" }).click();
  await page.waitForSelector(`tr[data-name="${name}"]`, WAIT);

  await row.getByRole("button", { name: "Destroy…" }).click();
  await row.getByRole("button", { name: "Confirm destroy" }).click();
  await page.waitForSelector(`tr[data-name="${name}"][data-state="DESTROYED"]`, WAIT);
  check(await page.evaluate(() => window.__noReload === true), "the page was never reloaded");
  console.log(`destroyed ${sandboxId}`);

  // The key lives in sessionStorage only, and "Forget key" drops it.
  const stored = await page.evaluate(() => [sessionStorage.getItem("sandboxd.apiKey"), localStorage.length]);
  check(stored[0] === key && stored[1] === 0, "the key is in sessionStorage only");
  await page.getByRole("button", { name: "Forget key" }).click();
  await page.getByLabel("API key").waitFor(WAIT);
  check((await page.evaluate(() => sessionStorage.length)) === 0, "Forget key removed the key");
} finally {
  lines.close();
  await browser.close();
}

/** The current view at 1280 px and at 390 px wide. */
async function screenshots(page, label) {
  for (const width of [1280, 390]) {
    await page.setViewportSize({ width, height: width === 390 ? 844 : 900 });
    await page.screenshot({ path: join(shots, `${label}-${width}.png`), fullPage: true });
  }
  await page.setViewportSize({ width: 1280, height: 900 });
}

function need(variable) {
  const value = process.env[variable];
  if (!value) fail(`${variable} is not set`);
  return value;
}

function check(condition, what) {
  if (!condition) fail(`check failed: ${what}`);
}

function fail(message) {
  console.error(`review.mjs: ${message}`);
  process.exit(1);
}
