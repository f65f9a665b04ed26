// The status line under the header: the outcome of the last action, read out by screen
// readers (role="status").
import { replace } from "./dom";

export function notify(...content: (Node | string)[]): void {
  const notice = document.getElementById("notice");
  if (notice) replace(notice, ...content);
}
