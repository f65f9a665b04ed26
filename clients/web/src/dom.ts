// Small DOM helpers. Every string from the server is set as text (textContent / attributes),
// never parsed as HTML.

type Child = Node | string | null | undefined | false;
type Attrs = Record<string, string | boolean | undefined>;

/** Creates `<tag>` with attributes (`true` sets an empty one, `false`/undefined skips it). */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? "" : value);
  }
  append(node, ...children);
  return node;
}

/** Appends children; strings become text nodes. */
export function append(parent: Node, ...children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
  }
}

/** Replaces every child of `parent`. */
export function replace(parent: Node, ...children: Child[]): void {
  while (parent.firstChild) parent.removeChild(parent.firstChild);
  append(parent, ...children);
}

/** A button running `action` on click (keyboard activation comes with the element). */
export function button(label: string, action: () => void, attrs: Attrs = {}): HTMLButtonElement {
  const node = el("button", { type: "button", ...attrs }, label);
  node.addEventListener("click", action);
  return node;
}

/** A labelled form field: `<label>text <input|select></label>`. */
export function field(text: string, control: HTMLElement): HTMLLabelElement {
  return el("label", { class: "field" }, el("span", {}, text), control);
}

/** A `<dl>` of name/value pairs; empty values are shown as a dash. */
export function definitions(pairs: [string, string][]): HTMLDListElement {
  const list = el("dl", { class: "pairs" });
  for (const [name, value] of pairs) {
    append(list, el("dt", {}, name), el("dd", {}, value === "" ? "—" : value));
  }
  return list;
}
