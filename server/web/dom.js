// DOM building and display formats shared by the pages (money in cents, times in ms).

/** Create an element: h("li", {class: "x", dataset: {testid: "chat-msg"}}, "text", child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "testid") el.dataset.testid = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
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
    return new Intl.NumberFormat(undefined, {style: "currency", currency}).format(n / 100);
  } catch {
    return `${currency} ${(n / 100).toFixed(2)}`;
  }
}

/** A price typed by a person ("12.5") to integer cents, or NaN. */
export function toCents(text) {
  const s = String(text).trim();
  if (!/^\d+(\.\d{1,2})?$/.test(s)) return NaN;
  const [whole, frac = ""] = s.split(".");
  return Number(whole) * 100 + Number((frac + "00").slice(0, 2));
}

/** Milliseconds left as m:ss (or h:mm:ss). */
export function clockText(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const hh = Math.floor(total / 3600), mm = Math.floor((total % 3600) / 60), ss = total % 60;
  const two = (x) => String(x).padStart(2, "0");
  return hh ? `${hh}:${two(mm)}:${two(ss)}` : `${mm}:${two(ss)}`;
}

export function timeOfDay(ms) {
  return new Date(ms).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
}

/** Human text for an error code the server sends. */
export function explain(err) {
  const text = {
    sold_out: "Sold out", limit_reached: "You reached the per-person limit", not_live: "Not started yet",
    ended: "The sale has ended", muted: "You are muted", banned: "You are banned here",
    rate_limited: "Slow down a little", filtered: "Links and contact details are not allowed",
    forbidden: "Not allowed", unknown_op: "This server does not offer that yet",
    team_full: "That team is full", already_in_team: "You are already in a team",
    connection_lost: "Connection lost, reconnecting…",
  }[err && err.code];
  return text || (err && (err.message || err.code)) || "Something went wrong";
}
