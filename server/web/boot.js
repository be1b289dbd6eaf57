// Page start-up: which room or group the URL names, a token (?token= or demo), the connection,
// and the connection badge. Every page starts here.
import {Souk, defaultUrl, pageToken} from "/sdk/souk.js";
import {byTestId} from "/static/dom.js";

/** The id after the page name: /live/<room>, /studio/<room>, /group/<id>. */
export function pathId(fallback = "demo") {
  const parts = location.pathname.split("/").filter(Boolean);
  return decodeURIComponent(parts[1] || fallback);
}

export async function boot(role, {room} = {}) {
  const id = pathId();
  const badge = byTestId("conn");
  const token = await pageToken({role, room: room || id});
  const souk = new Souk(defaultUrl(), token);
  souk.on("connection", (ev) => {
    if (!badge) return;
    badge.textContent = ev.state;
    badge.className = `pill ${ev.state}`;
    document.body.dataset.conn = ev.state;
  });
  const user = await souk.connect();
  globalThis.souk = souk; // for the console and the browser tests
  const me = byTestId("me");
  if (me) me.textContent = `${user.name} · ${user.role}`;
  return {souk, user, id};
}

/** Show a fatal start-up error on the page instead of a silent blank. */
export function fail(err) {
  const box = byTestId("fatal") || document.body;
  box.classList.remove("hidden");
  box.textContent = `Could not start: ${err && (err.message || err.code)}`;
  console.error(err);
}
