// Display formats for timestamps, durations and enum values.
import { timestampDate, type Timestamp, type Duration } from "@bufbuild/protobuf/wkt";

export function time(ts: Timestamp | undefined): string {
  if (!ts) return "";
  return timestampDate(ts).toLocaleString();
}

export function duration(d: Duration | undefined): string {
  if (!d) return "";
  const seconds = Number(d.seconds);
  if (seconds >= 3600 && seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds >= 60 && seconds % 60 === 0) return `${seconds / 60} min`;
  const total = seconds + d.nanos / 1e9;
  if (total < 1) return `${(total * 1000).toFixed(1)} ms`;
  return `${total.toFixed(1)} s`;
}

/** The name of an enum value without its prefix, e.g. `RUNNING` (TypeScript enums map back). */
export function enumName(values: Record<number, string>, value: number): string {
  return values[value] ?? String(value);
}

/** `k=v,k2=v2` → a label map; blank parts are ignored. Throws on a part without `=`. */
export function parseLabels(selector: string): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const part of selector.split(",")) {
    const trimmed = part.trim();
    if (trimmed === "") continue;
    const at = trimmed.indexOf("=");
    if (at <= 0) throw new Error(`label selector part "${trimmed}" is not key=value`);
    labels[trimmed.slice(0, at).trim()] = trimmed.slice(at + 1).trim();
  }
  return labels;
}

export function labelText(labels: Record<string, string>): string {
  return Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(", ");
}

export function bytes(n: bigint | number): string {
  const value = Number(n);
  if (value < 1024) return `${value} B`;
  if (value < 1024 * 1024) return `${(value / 1024).toFixed(1)} KiB`;
  return `${(value / 1024 / 1024).toFixed(1)} MiB`;
}
