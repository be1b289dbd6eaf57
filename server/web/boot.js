// Page start-up for the studio and group pages: the page's catalog and language toggle, which
// room or group the URL names, a token (?token= or demo), the connection and its badge.
// (The viewer page starts in live.js instead: its first frame must not wait for the rest.)
import {Souk, defaultUrl, pageToken} from "/sdk/souk.js";
import {byTestId, explain, fill, h} from "/static/dom.js";
import {demoName, langToggle, loadCatalog, onLang, t} from "/static/i18n.js";

/** The id after the page name: /live/<room>, /studio/<room>, /group/<id>. */
export function pathId(fallback = "demo") {
  const parts = location.pathname.split("/").filter(Boolean);
  return decodeURIComponent(parts[1] || fallback);
}

/** Translate the page (its catalog: `page`), connect with a token for `role`; resolves with {souk, user, id}. */
export async function boot(role, page, {room} = {}) {
  await loadCatalog(page);
  langToggle(byTestId("lang"));
  const id = pathId();
  const badge = byTestId("conn");
  const token = await pageToken({role, room: room || id, name: demoName(role)});
  const souk = new Souk(defaultUrl(), token);
  const show = (state) => {
    document.body.dataset.conn = state;
    if (!badge) return;
    badge.dataset.state = state;
    badge.textContent = t(`conn.${state}`);
  };
  souk.on("connection", (ev) => show(ev.state));
  onLang(() => show(souk.state));
  const user = await souk.connect();
  globalThis.souk = souk; // for the console and the browser tests
  const me = byTestId("me");
  const who = () => { if (me) me.textContent = `${user.name} · ${t(`role.${user.role}`)}`; };
  who();
  onLang(who);
  return {souk, user, id};
}

/** Show a start-up failure on the page instead of a silent blank. */
export function fail(err) {
  const box = byTestId("fatal") || document.body;
  box.classList.remove("hidden");
  fill(box, h("b", {}, t("fatal.title")), h("p", {}, explain(err)), h("p", {class: "meta"}, t("fatal.hint")));
  console.warn("souk: the page could not start", err);
}

/** A short message at the bottom of the page. */
export function toast(text) {
  const el = byTestId("toast");
  if (!el) return;
  el.textContent = text;
  el.classList.remove("hidden");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => el.classList.add("hidden"), 3000);
}
