// The viewer page: watch, chat, hearts, pinned product, flash sales, group buys, Q&A.
import {boot, fail} from "/static/boot.js";
import {ChatPanel} from "/static/chat.js";
import {byTestId, explain, h, money} from "/static/dom.js";
import {QuestionList} from "/static/questions.js";
import {SaleCards, TeamBuyCards} from "/static/sales.js";

const WATCH_RETRY_MS = 2000;
// Full offers by default (ICE gathering completes first: works with any server); ?trickle=1
// sends the offer at once and the candidates after it with the `ice` op.
const trickle = new URLSearchParams(location.search).get("trickle") === "1";

async function main() {
  const {souk, id: room} = await boot("viewer");
  const ch = `room:${room}`;
  const video = byTestId("video");
  byTestId("unmute").addEventListener("click", () => { video.muted = false; video.play().catch(() => {}); });
  const status = byTestId("video-status");
  video.addEventListener("playing", () => status.classList.add("hidden"));

  // Watch: now if the room is live; again whenever it goes live or the peer fails.
  let watching = false, retry = null, ended = false;
  async function watch() {
    retry = null;
    if (watching) return;
    watching = true;
    try {
      const pc = await souk.watch(video, room, {trickle});
      status.textContent = "connecting video…";
      pc.addEventListener("connectionstatechange", () => {
        if ((pc.connectionState === "failed" || pc.connectionState === "closed") && !ended) {
          watching = false;
          status.classList.remove("hidden");
          status.textContent = "video lost, retrying…";
          watchSoon(WATCH_RETRY_MS);
        }
      });
    } catch (err) {
      watching = false;
      status.textContent = err.code === "not_found" ? "waiting for the stream…"
        : err.code === "unknown_op" ? "video is not available on this server" : explain(err);
      if (err.code !== "unknown_op" && err.code !== "forbidden") watchSoon(WATCH_RETRY_MS);
    }
  }
  function watchSoon(ms) {
    if (!retry && !watching && !ended) retry = setTimeout(watch, ms);
  }
  watch(); // before join: ICE gathering overlaps the join round trip
  const chat = new ChatPanel(byTestId("chat"), souk, {room});
  const questions = new QuestionList(byTestId("qa"), souk, ch, {mode: "viewer", room});
  const sales = new SaleCards(byTestId("sales"), souk, room, {mode: "viewer"});
  const teambuys = new TeamBuyCards(byTestId("teambuys"), souk, room, {mode: "viewer"});

  const apply = (snap) => {
    byTestId("title").textContent = snap.title || `Room ${room}`;
    setState(snap.state);
    if (snap.state === "ended") {
      ended = true;
      status.textContent = "the live has ended";
    }
    byTestId("viewers").textContent = snap.viewers ?? 0;
    byTestId("likes").textContent = snap.likes ?? 0;
    showPinned(snap.pinned);
    chat.render(snap.chat);
    questions.render(snap.questions);
    sales.render(snap.sales);
    teambuys.render(snap.teambuys);
  };
  apply(await souk.join(room));

  souk.on("resync", (ev) => { if (ev.ch === ch && ev.snapshot) apply(ev.snapshot); });
  souk.on("viewers", (ev) => { if (ev.ch === ch) byTestId("viewers").textContent = ev.count; });
  souk.on("likes", (ev) => { if (ev.ch === ch) byTestId("likes").textContent = ev.total; });
  souk.on("pinned", (ev) => { if (ev.ch === ch) showPinned(ev.product); });
  souk.on("room", (ev) => { if (ev.ch === ch && ev.title) byTestId("title").textContent = ev.title; });
  souk.on("state", (ev) => {
    if (ev.ch !== ch) return;
    setState(ev.state);
    if (ev.state === "live") {
      ended = false;
      watchSoon(200);
    } else if (ev.state === "ended") {
      ended = true;
      clearTimeout(retry);
      retry = null;
      if (watching) souk.unwatch(room).catch(() => {});
      watching = false;
      status.classList.remove("hidden");
      status.textContent = "the live has ended";
    }
  });
  // My orders, from `order` events on user:<me>; one line per order, updated in place.
  souk.on("order", (ev) => {
    const box = byTestId("orders");
    const line = h("div", {testid: "order", dataset: {order: ev.id, status: ev.status}},
      `${ev.qty} × ${ev.title || ev.product || ""} ${money(ev.price, ev.currency)} — ${ev.status}`);
    const old = box.querySelector(`[data-order="${CSS.escape(ev.id)}"]`);
    if (old) old.replaceWith(line);
    else box.prepend(line);
  });

  // Hearts: counted locally and sent in one `like` at most every 300 ms (the server aggregates too).
  let pendingLikes = 0, likeTimer = null;
  byTestId("heart").addEventListener("click", () => {
    pendingLikes += 1;
    floatHeart();
    if (!likeTimer) {
      likeTimer = setTimeout(async () => {
        const n = Math.min(pendingLikes, 100);
        pendingLikes -= n;
        likeTimer = null;
        try { await souk.like(room, n); } catch (err) { chat.showError(err); }
      }, 300);
    }
  });

  byTestId("ask-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = byTestId("ask-input");
    const text = input.value.trim();
    if (!text) return;
    try {
      const q = await souk.ask(room, text);
      if (q) questions.upsert(q);
      input.value = "";
      byTestId("q-error").textContent = "";
    } catch (err) {
      byTestId("q-error").textContent = explain(err);
    }
  });

  document.body.dataset.ready = "1"; // every control is wired (tests wait for this)
}

function setState(state) {
  const el = byTestId("room-state");
  el.textContent = state || "idle";
  el.className = `pill ${state === "live" ? "live" : ""}`;
}

function showPinned(product) {
  const el = byTestId("pinned");
  if (!product) { el.textContent = "nothing pinned yet"; el.className = "product-card meta"; return; }
  el.className = "product-card";
  el.replaceChildren(...[
    product.image ? h("img", {src: product.image, alt: "", width: 64, height: 64}) : null,
    h("div", {}, h("b", {testid: "pinned-title"}, product.title || product.id),
      h("div", {class: "price"}, product.price != null ? money(product.price, product.currency) : ""))].filter(Boolean));
}

function floatHeart() {
  const box = byTestId("hearts");
  const heart = h("span", {class: "heart-float", style: `right:${Math.random() * 30}px`}, "♥");
  box.append(heart);
  setTimeout(() => heart.remove(), 1500);
}

main().catch(fail);
