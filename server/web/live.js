// The viewer page's first module: the token, the websocket and the watch's ICE gathering start
// here, before the rest of the page (live-ui.js, preloaded alongside) is wired up.
import {Souk, defaultUrl, pageToken} from "/sdk/souk.js";
import {demoName, preloadCatalog} from "/static/i18n.js";

const room = decodeURIComponent(location.pathname.split("/").filter(Boolean)[1] || "demo");
const trickle = new URLSearchParams(location.search).get("trickle") === "1";
const video = document.querySelector('[data-testid="video"]');

async function start() {
  const token = await pageToken({role: "viewer", room, name: demoName("viewer")});
  // Full offers by default (they work with any server); ?trickle=1 sends candidates with `ice`.
  const souk = new Souk(defaultUrl(), token, {trickle});
  globalThis.souk = souk; // for the console and the browser tests
  const connected = souk.connect();
  connected.catch(() => {}); // reported by the page below
  // Watch at once (gathering overlaps connect and auth); stopped if the room is not live.
  souk.watch(video, room);
  return {souk, connected};
}

preloadCatalog("live"); // in parallel with the video's start, not after it
const started = start();
started.catch(() => {}); // reported by the page below
const ui = await import("/static/live-ui.js");
ui.main({room, video, started});
