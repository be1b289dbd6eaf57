// The replay page (/replay/<room>): the room's past lives, one played with <video> from the
// server's Range-served file, its chapters as a product list (tap: jump to when the product
// was shown) and a Buy button where a sale or team offer for that product is open now.
import {boot, fail, toast} from "/static/boot.js";
import {byTestId, explain, fill, h} from "/static/dom.js";
import {onLang, t} from "/static/i18n.js";

const video = byTestId("video");
let state = {souk: null, room: "", replays: [], current: null, sales: [], offers: []};

async function api(path) {
  const res = await fetch(path, {headers: {Authorization: `Bearer ${state.souk.token}`}});
  if (!res.ok) throw new Error(`${path}: ${res.status}`);
  return res.json();
}

function clock(s) {
  const n = Math.max(0, Math.round(s));
  return `${Math.floor(n / 60)}:${String(n % 60).padStart(2, "0")}`;
}

function when(ms) {
  return new Date(ms).toLocaleString(document.documentElement.lang || undefined,
    {month: "short", day: "numeric", hour: "2-digit", minute: "2-digit"});
}

/** The open sale or team offer for a product, if any (what its Buy button buys). */
function openOffer(product) {
  const sale = state.sales.find((s) => s.product?.id === product || s.product === product);
  if (sale && sale.phase === "live") return {kind: "sale", id: sale.id};
  const offer = state.offers.find((o) => (o.product?.id === product || o.product === product)
    && (o.stock_left === null || o.stock_left === undefined || o.stock_left > 0));
  return offer ? {kind: "team", id: offer.id} : null;
}

async function buy(offer) {
  try {
    if (offer.kind === "sale") await state.souk.buy(offer.id);
    else await state.souk.teamOpen(offer.id);
    toast(t(offer.kind === "sale" ? "replay.bought" : "replay.teamOpened"));
  } catch (err) {
    toast(explain(err));
  }
}

function jump(at) {
  video.currentTime = at;
  video.play().catch(() => {}); // a player may refuse without a gesture: the time is set anyway
}

function drawChapters() {
  const list = byTestId("chapters");
  const chapters = state.current?.chapters || [];
  byTestId("chapters-empty").classList.toggle("hidden", chapters.length > 0);
  fill(list, ...chapters.map((c, i) => {
    const offer = openOffer(c.product);
    return h("li", {class: "chapter", testid: "chapter", dataset: {at: c.at_s, i}},
      h("button", {class: "chapter-jump", type: "button", testid: "chapter-jump", onclick: () => jump(c.at_s)},
        c.image ? h("img", {src: c.image, alt: "", loading: "lazy"}) : h("span", {class: "chapter-noimg"}),
        h("span", {class: "chapter-text"}, h("b", {}, c.title || t("replay.product")),
          h("small", {class: "meta"}, `${clock(c.at_s)} · ${t(`replay.kind.${c.kind}`)}`))),
      offer ? h("button", {class: "primary", type: "button", testid: "chapter-buy",
        onclick: () => buy(offer)}, t(offer.kind === "sale" ? "replay.buy" : "replay.team")) : null);
  }));
}

function drawLives() {
  fill(byTestId("lives"), ...state.replays.map((r) => h("button", {
    class: r === state.current ? "chip on" : "chip", type: "button", testid: "live-item",
    onclick: () => choose(r)}, `${when(r.started_at)} · ${clock(r.duration_s)}`)));
}

function choose(replay) {
  state.current = replay;
  video.src = `${replay.url}?token=${encodeURIComponent(state.souk.token)}`;
  drawLives();
  drawChapters();
}

async function main() {
  const {souk, id} = await boot("viewer", "replay");
  state.souk = souk;
  state.room = id;
  const [replays, snap] = await Promise.all([
    api(`/api/rooms/${encodeURIComponent(id)}/replays`),
    api(`/api/rooms/${encodeURIComponent(id)}`).catch(() => ({})),
  ]);
  byTestId("title").textContent = snap.title || t("replay.title");
  state.sales = snap.sales || [];
  state.offers = snap.teambuys || [];
  state.replays = replays.filter((r) => r.size > 0);
  byTestId("empty").classList.toggle("hidden", state.replays.length > 0);
  if (state.replays.length) choose(state.replays[0]);
  onLang(() => { drawLives(); drawChapters(); });
  document.body.dataset.ready = "1";
}

main().catch(fail);
