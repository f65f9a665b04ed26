// The artifact review queue: pending artifacts with previews (text, diff lines coloured, image
// bytes shown from a blob: URL), approve / reject with a comment (etag-checked), recently
// reviewed ones below, live from WatchArtifacts.
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code } from "@connectrpc/connect";
import {
  ArtifactType,
  ReviewDecision,
  ReviewState,
  type Artifact,
} from "./gen/sandboxd/v1/artifact_pb";
import { artifacts } from "./api";
import { button, definitions, el, field, replace } from "./dom";
import { errorBlock, hasCode } from "./errors";
import { bytes, enumName, time } from "./format";
import { notify } from "./notice";
import { keepWatching } from "./watch";

/** Largest artifact the page downloads to show (images, full text). */
const MAX_DOWNLOAD_BYTES = 8 * 1024 * 1024;
const RECENT_REVIEWED = 20;

export function reviewStateName(state: ReviewState): string {
  return enumName(ReviewState, state);
}

export function artifactsPage(root: HTMLElement): () => void {
  const known = new Map<string, Artifact>();
  const cards = new Map<string, { artifact: Artifact; card: HTMLElement }>();
  const imageUrls = new Map<string, string>();
  const live = el("span", { class: "live", "data-live": "false" }, "connecting…");
  const listError = el("div");
  const pending = el("div", { class: "cards", id: "pending-artifacts" });
  const reviewed = el("div", { class: "cards", id: "reviewed-artifacts" });
  replace(
    root,
    el("h2", {}, "Review queue ", live),
    listError,
    el("section", { "aria-labelledby": "pending-heading" }, el("h3", { id: "pending-heading" }, "Waiting for review"), pending),
    el("section", { "aria-labelledby": "reviewed-heading" }, el("h3", { id: "reviewed-heading" }, "Recently reviewed"), reviewed),
  );

  function upsert(incoming: Artifact): void {
    const current = known.get(incoming.artifactId);
    // A review is final: a stale PENDING copy never replaces a reviewed one.
    if (current && current.reviewState !== ReviewState.PENDING && incoming.reviewState === ReviewState.PENDING) return;
    known.set(incoming.artifactId, incoming);
  }

  async function reload(): Promise<void> {
    try {
      const [waiting, recent] = await Promise.all([
        artifacts.listArtifacts({ reviewState: ReviewState.PENDING, pageSize: 100 }),
        artifacts.listArtifacts({ pageSize: 100 }),
      ]);
      for (const artifact of [...recent.artifacts, ...waiting.artifacts]) upsert(artifact);
      replace(listError);
      render();
    } catch (error) {
      replace(listError, errorBlock("Listing artifacts", error));
    }
  }

  function render(): void {
    const all = [...known.values()];
    const waiting = all.filter((a) => a.reviewState === ReviewState.PENDING).sort((a, b) => ms(b.createTime) - ms(a.createTime));
    const done = all
      .filter((a) => a.reviewState !== ReviewState.PENDING)
      .sort((a, b) => ms(b.reviewTime) - ms(a.reviewTime))
      .slice(0, RECENT_REVIEWED);
    place(pending, waiting, "Nothing waits for review.");
    place(reviewed, done, "Nothing reviewed yet.");
  }

  function place(container: HTMLElement, list: Artifact[], empty: string): void {
    const wanted = list.map(cardFor);
    if (wanted.length === 0) {
      replace(container, el("p", { class: "empty" }, empty));
      return;
    }
    const current = [...container.children];
    if (current.length !== wanted.length || current.some((node, i) => node !== wanted[i])) {
      replace(container, ...wanted);
    }
  }

  function cardFor(artifact: Artifact): HTMLElement {
    const cached = cards.get(artifact.artifactId);
    if (cached && cached.artifact === artifact) return cached.card;
    const fresh = card(artifact);
    cards.set(artifact.artifactId, { artifact, card: fresh });
    return fresh;
  }

  function card(artifact: Artifact): HTMLElement {
    const state = reviewStateName(artifact.reviewState);
    const type = enumName(ArtifactType, artifact.type);
    const title = artifact.title || artifact.artifactId;
    return el(
      "article",
      { class: "artifact", "data-artifact-id": artifact.artifactId, "data-review-state": state, "aria-label": title },
      el("h4", {}, title, " ", el("span", { class: `review review-${state}` }, state)),
      definitions([
        ["Type", type],
        ["Sandbox", artifact.sandboxId],
        ["Published by", artifact.publisher],
        ["Published", time(artifact.createTime)],
        ["Size", bytes(artifact.sizeBytes)],
        ["Content type", artifact.contentType],
        ["Path in sandbox", artifact.sandboxPath],
        ...(artifact.reviewState === ReviewState.PENDING
          ? []
          : ([
              ["Reviewed by", artifact.reviewer],
              ["Reviewed", time(artifact.reviewTime)],
              ["Comment", artifact.reviewComment],
            ] as [string, string][])),
      ]),
      el("p", {}, el("a", { href: `#/sandboxes/${artifact.sandboxId}` }, "Sandbox details")),
      preview(artifact),
      artifact.reviewState === ReviewState.PENDING && reviewForm(artifact),
    );
  }

  function preview(artifact: Artifact): HTMLElement {
    const box = el("div", { class: "preview" });
    if (isImage(artifact)) {
      const cachedUrl = imageUrls.get(artifact.artifactId);
      if (cachedUrl) {
        replace(box, image(artifact, cachedUrl));
      } else if (artifact.sizeBytes > BigInt(MAX_DOWNLOAD_BYTES)) {
        replace(box, el("p", { class: "hint" }, "Image too large to preview here."));
      } else {
        replace(box, "Loading image…");
        void download(artifact).then(
          (data) => {
            const url = URL.createObjectURL(new Blob([data], { type: artifact.contentType || "image/png" }));
            imageUrls.set(artifact.artifactId, url);
            replace(box, image(artifact, url));
          },
          (error) => replace(box, errorBlock("Loading the image", error)),
        );
      }
      return box;
    }
    const text = el("pre", { class: "text-preview", tabindex: "0", "aria-label": "Preview" });
    showText(text, artifact, artifact.preview);
    replace(
      box,
      text,
      artifact.sizeBytes > BigInt(new TextEncoder().encode(artifact.preview).length) &&
        artifact.sizeBytes <= BigInt(MAX_DOWNLOAD_BYTES) &&
        button("Show all", () => {
          void download(artifact).then(
            (data) => showText(text, artifact, new TextDecoder().decode(data)),
            (error) => box.appendChild(errorBlock("Reading the artifact", error)),
          );
        }),
    );
    return box;
  }

  function reviewForm(artifact: Artifact): HTMLElement {
    const comment = el("textarea", { name: "comment", rows: "2" });
    const error = el("div");
    const decide = async (decision: ReviewDecision): Promise<void> => {
      replace(error);
      try {
        const done = await artifacts.reviewArtifact({
          artifactId: artifact.artifactId,
          decision,
          comment: comment.value,
          etag: artifact.etag,
        });
        upsert(done);
        render();
        notify(`${done.title || done.artifactId}: ${reviewStateName(done.reviewState)}.`);
      } catch (failure) {
        replace(error, errorBlock("Reviewing", failure));
        if (hasCode(failure, Code.Aborted) || hasCode(failure, Code.FailedPrecondition)) {
          // Someone else changed it first: show its current state.
          try {
            upsert(await artifacts.getArtifact({ artifactId: artifact.artifactId }));
            render();
          } catch {
            // The error above already says what went wrong.
          }
        }
      }
    };
    return el(
      "form",
      { class: "review-form", "aria-label": `Review ${artifact.title}` },
      field("Comment", comment),
      el(
        "div",
        { class: "buttons" },
        button("Approve", () => void decide(ReviewDecision.APPROVE), { class: "approve" }),
        button("Reject", () => void decide(ReviewDecision.REJECT), { class: "danger" }),
      ),
      error,
    );
  }

  const stop = keepWatching((resumeToken, options) => artifacts.watchArtifacts({ resumeToken }, options), {
    onReset: () => void reload(),
    onStatus: (isLive, error) => {
      live.dataset.live = String(isLive);
      live.textContent = isLive ? "live" : `reconnecting… (${error instanceof Error ? error.message : ""})`;
    },
    onMessage: (message) => {
      if (!message.artifact) return;
      upsert(message.artifact);
      render();
    },
  });
  return () => {
    stop();
    for (const url of imageUrls.values()) URL.revokeObjectURL(url);
  };
}

function isImage(artifact: Artifact): boolean {
  return artifact.type === ArtifactType.IMAGE || artifact.contentType.startsWith("image/");
}

function image(artifact: Artifact, url: string): HTMLElement {
  return el("img", { src: url, alt: `Image artifact ${artifact.title}` });
}

/** The artifact's bytes, read from the ReadArtifact stream. */
async function download(artifact: Artifact): Promise<Uint8Array<ArrayBuffer>> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const part of artifacts.readArtifact({ artifactId: artifact.artifactId })) {
    chunks.push(part.chunk);
    total += part.chunk.length;
    if (total > MAX_DOWNLOAD_BYTES) throw new Error("the artifact is too large to show here");
  }
  const data = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    data.set(chunk, offset);
    offset += chunk.length;
  }
  return data;
}

/** Puts `text` into `pre`, one span per line for diffs (coloured by CSS), as text only. */
function showText(pre: HTMLElement, artifact: Artifact, text: string): void {
  if (artifact.type !== ArtifactType.DIFF) {
    pre.textContent = text;
    return;
  }
  replace(pre, ...text.split("\n").map((line) => el("span", { class: `diff-line ${diffClass(line)}` }, `${line}\n`)));
}

function diffClass(line: string): string {
  if (line.startsWith("+++") || line.startsWith("---") || line.startsWith("diff ")) return "diff-file";
  if (line.startsWith("@@")) return "diff-hunk";
  if (line.startsWith("+")) return "diff-add";
  if (line.startsWith("-")) return "diff-del";
  return "diff-context";
}

function ms(ts: Artifact["createTime"]): number {
  return ts ? timestampMs(ts) : 0;
}
