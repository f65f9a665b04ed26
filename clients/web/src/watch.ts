// Keeps a server stream open: every message's resume token is remembered, and after an error
// or the end of the stream the call is made again with the last token, so no event is missed.
// When the server no longer has the events after that token (OUT_OF_RANGE) or refuses it, the
// watch starts afresh and `onReset` re-reads the current state. The stream counts as live once
// its response headers arrived (the server subscribed), and a fresh start re-reads the state
// only then, so no change falls between the read and the subscription.
import { Code } from "@connectrpc/connect";
import { hasCode } from "./errors";

export interface WatchHandlers<T> {
  onMessage(message: T): void;
  /** Called once the first stream is open, and whenever the watch restarts without a token. */
  onReset(): void;
  /** `error` is set while reconnecting after a failure. */
  onStatus(live: boolean, error?: unknown): void;
}

const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 15_000;

/** Starts watching; the returned function stops it. */
export function keepWatching<T extends { resumeToken: string }>(
  open: (resumeToken: string, options: StreamOptions) => AsyncIterable<T>,
  handlers: WatchHandlers<T>,
): () => void {
  const abort = new AbortController();
  void run(open, handlers, abort.signal);
  return () => abort.abort();
}

/** Call options of one stream: cancellation, and the response headers' arrival. */
export interface StreamOptions {
  signal: AbortSignal;
  onHeader: () => void;
}

async function run<T extends { resumeToken: string }>(
  open: (resumeToken: string, options: StreamOptions) => AsyncIterable<T>,
  handlers: WatchHandlers<T>,
  signal: AbortSignal,
): Promise<void> {
  let token = "";
  let retry = FIRST_RETRY_MS;
  let fresh = true;
  while (!signal.aborted) {
    try {
      const onHeader = (): void => {
        if (fresh) handlers.onReset();
        fresh = false;
        handlers.onStatus(true);
      };
      const stream = open(token, { signal, onHeader });
      for await (const message of stream) {
        token = message.resumeToken;
        retry = FIRST_RETRY_MS;
        handlers.onMessage(message);
      }
      if (signal.aborted) return;
      handlers.onStatus(false, new Error("the stream ended; reconnecting"));
    } catch (error) {
      if (signal.aborted) return;
      if (hasCode(error, Code.OutOfRange) || hasCode(error, Code.InvalidArgument)) {
        token = "";
        fresh = true;
      }
      handlers.onStatus(false, error);
    }
    await pause(retry, signal);
    retry = Math.min(retry * 2, MAX_RETRY_MS);
  }
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
