// DOM building and display formats of the pages. No style attributes: the pages run under a
// Content-Security-Policy without 'unsafe-inline' (CSSOM properties are fine).
import {has, locale, t} from "/static/i18n.js";

/** Create an element: h("li", {class: "x", testid: "chat-msg", dataset: {id}}, "text", child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "testid") el.dataset.testid = v;
    else if (k === "i18n") { el.dataset.i18n = v; el.textContent = t(v); }
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "style") throw new Error("no style attributes under the CSP: use a class");
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** The element with `data-testid="id"` (optionally inside `root`). */
export function byTestId(id, root = document) {
  return root.querySelector(`[data-testid="${id}"]`);
}

/** Integer cents to a price label; never floats in state, only here for display. */
export function money(cents, currency = "CNY") {
  const n = Number(cents || 0);
  try {
    return new Intl.NumberFormat(locale(), {style: "currency", currency: currency || "CNY",
      currencyDisplay: "narrowSymbol"}).format(n / 100);
  } catch {
    return `${currency} ${(n / 100).toFixed(2)}`;
  }
}

/** Milliseconds left as m:ss (or h:mm:ss). */
export function clockText(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const hh = Math.floor(total / 3600), mm = Math.floor((total % 3600) / 60), ss = total % 60;
  const two = (x) => String(x).padStart(2, "0");
  return hh ? `${hh}:${two(mm)}:${two(ss)}` : `${mm}:${two(ss)}`;
}

/** A person's name as other shoppers see it: the first character and a star (小*). */
export function maskName(name) {
  const chars = [...String(name || "").trim()];
  return chars.length ? `${chars[0]}*` : "*";
}

function hue(text) {
  let x = 0;
  for (const ch of String(text || "")) x = (x * 31 + ch.codePointAt(0)) % 360;
  return x;
}

/** A round avatar: the name's first character on a colour of its own. */
export function avatar(name, {key, size = ""} = {}) {
  const el = h("span", {class: `avatar ${size}`.trim(), "aria-hidden": "true"}, [...String(name || "?")][0] || "?");
  el.style.setProperty("--hue", String(hue(key || name)));
  return el;
}

/** A product's picture, or a tile with its initial when it has none (or it fails to load). */
export function productImage(p, cls = "thumb") {
  const title = (p && p.title) || "";
  const tile = () => {
    const el = h("span", {class: `${cls} ph`, "aria-hidden": "true"}, [...title][0] || "?");
    el.style.setProperty("--hue", String(hue(title)));
    return el;
  };
  if (!p || !p.image) return tile();
  const img = h("img", {class: cls, src: p.image, alt: "", loading: "lazy", decoding: "async"});
  img.addEventListener("error", () => img.replaceWith(tile()), {once: true});
  return img;
}

/** Human text for an error code the server sends (never a raw server message with ids). */
export function explain(err) {
  const key = `err.${err && err.code}`;
  return has(key) ? t(key) : t("err.generic");
}

/** Remove every child and add these. */
export function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}
