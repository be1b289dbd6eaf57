// The pages' two languages (zh-CN and en): one catalog per page and language
// (catalog/<page>.<lang>.js holds every string the page shows; only the one shown is loaded).
// The language is the remembered toggle, else the browser's (what it sends as Accept-Language);
// components redraw on a switch (onLang), without a reload.

const KEY = "souk.lang";
const LANGS = ["zh", "en"];
let lang = "en";
let page = "";
let strings = {};
const parts = new Set(); // catalogs of modules loaded on demand (extendCatalog), kept on a switch
const loading = new Map(); // "<page>.<lang>" -> Promise of the catalog
const listeners = new Set();

/** The language to show: the remembered toggle, else the first zh/en of navigator.languages. */
export function pickLang() {
  let stored = null;
  try { stored = localStorage.getItem(KEY); } catch { /* storage blocked */ }
  if (LANGS.includes(stored)) return stored;
  for (const l of navigator.languages || [navigator.language || ""]) {
    const tag = String(l).toLowerCase();
    if (tag.startsWith("zh")) return "zh";
    if (tag.startsWith("en")) return "en";
  }
  return "en";
}

/** A friendly name for a demo visitor (demo tokens are named by the page that asks). */
export function demoName(role) {
  const n = Math.floor(1000 + Math.random() * 9000);
  const zh = pickLang() === "zh";
  const base = {streamer: zh ? "主播" : "Host", member: zh ? "群友" : "Member", admin: zh ? "店长" : "Manager"}[role];
  return base ? `${base}${zh ? "" : " "}${n}` : `${zh ? "观众" : "Guest "}${n}`;
}

/** Start fetching a page's catalog (the viewer page does it before anything else). */
export function preloadCatalog(name, which = pickLang()) {
  const key = `${name}.${which}`;
  if (!loading.has(key)) loading.set(key, import(`/static/catalog/${key}.js`).then((m) => m.default));
  return loading.get(key);
}

/** Load the page's catalog in the language to show and translate the static markup. */
export async function loadCatalog(name) {
  page = name;
  lang = pickLang();
  strings = {...await preloadCatalog(name, lang)};
  document.documentElement.lang = locale();
  translate(document);
}

/** Add the strings of a module loaded on demand (catalog/<part>.<lang>.js) to the page's, so
 * that the page does not carry them until the module is needed. */
export async function extendCatalog(part) {
  parts.add(part);
  Object.assign(strings, await preloadCatalog(part, lang));
}

/** A BCP 47 tag for Intl formatters. */
export function locale() {
  return lang === "zh" ? "zh-CN" : "en";
}

/** The string for `key`, with {name} placeholders filled from `vars`. */
export function t(key, vars) {
  let s = strings[key];
  if (s === undefined) {
    console.warn("souk: no string", key);
    return key;
  }
  if (typeof s === "function") return s(vars || {});
  if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (vars[k] !== undefined ? String(vars[k]) : m));
  return s;
}

/** Whether the catalog has `key`. */
export function has(key) {
  return key in strings;
}

/** Fill [data-i18n], [data-i18n-ph], [data-i18n-title] under `root`. */
export function translate(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-ph]")) el.placeholder = t(el.dataset.i18nPh);
  for (const el of root.querySelectorAll("[data-i18n-title]")) {
    const text = t(el.dataset.i18nTitle);
    el.title = text;
    el.setAttribute("aria-label", text);
  }
}

/** Call `fn` after every language switch (components redraw their dynamic text). */
export function onLang(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** Switch to `next` (or the other language), remember it, and redraw. */
export async function switchLang(next) {
  const want = next || (lang === "zh" ? "en" : "zh");
  try { localStorage.setItem(KEY, want); } catch { /* storage blocked: this page only */ }
  const shown = {...await preloadCatalog(page, want)};
  for (const part of parts) Object.assign(shown, await preloadCatalog(part, want));
  strings = shown;
  lang = want;
  document.documentElement.lang = locale();
  translate(document);
  for (const fn of [...listeners]) {
    try { fn(lang); } catch (e) { console.error("souk: redraw failed", e); }
  }
}

/** Wire a toggle button: it shows the other language's name and switches to it. */
export function langToggle(button) {
  if (!button) return;
  const label = () => { button.textContent = lang === "zh" ? "EN" : "中文"; button.dataset.lang = lang; };
  label();
  button.addEventListener("click", () => switchLang());
  onLang(label);
}
