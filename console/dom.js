// Building the page from text only: every string becomes a text node, never markup.

import { parseSnippet } from "./format.js";

/**
 * `h("a", {href: "#/x", class: "link"}, "text", child)`: an element; strings are text nodes,
 * attributes are set one by one (an `on*` attribute would be a handler, so it is refused).
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) {
      element.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      element.className = value;
    } else if (name === "dataset") {
      Object.assign(element.dataset, value);
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replaces an element's children. */
export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

/** A snippet with each match in a `<mark>`, built from text nodes. */
export function snippet(text) {
  const fragment = document.createDocumentFragment();
  for (const run of parseSnippet(text)) {
    fragment.append(run.match ? h("mark", {}, run.text) : document.createTextNode(run.text));
  }
  return fragment;
}

/** A link to a route of the console (a hash route, so the key never reaches a URL). */
export function link(route, ...children) {
  return h("a", { href: `#${route}` }, ...children);
}

/** A labelled form control, ids made unique per page. */
let counter = 0;
export function field(label, control, hint) {
  counter += 1;
  const id = control.id || `f${counter}`;
  control.id = id;
  const hintId = hint ? `${id}-hint` : null;
  if (hintId) control.setAttribute("aria-describedby", hintId);
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    control,
    hint ? h("small", { id: hintId, class: "hint" }, hint) : null,
  );
}
