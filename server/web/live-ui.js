// The viewer page, phone first: full-bleed video with chat, hearts, the pinned product and the
// flash-sale pop-up over it; the bag and the Q&A / orders panel as bottom sheets (columns on a
// desktop). The stage's state comes from the SDK's media events and the frames the <video>
// presents, never from a peer connection the SDK may have replaced.
import {byTestId, explain, fill, h} from "/static/dom.js";
import {langToggle, loadCatalog, onLang, t} from "/static/i18n.js";
import {ChatPanel} from "/static/chat.js";
import {Shop, ShopView} from "/static/shop.js";

const STALL_MS = 2500; // no new frame for this long while "connected": say we are catching up
const reducedMotion = matchMedia("(prefers-reduced-motion: reduce)");

export async function main({room, video, started}) {
  await loadCatalog("live");
  langToggle(byTestId("lang"));
  const ui = new Sheets();
  let souk;
  try {
    ({souk} = await started);
    await souk.untilOpen();
  } catch (err) {
    return fatal(err);
  }
  const ch = `room:${room}`;
  const stage = new Stage(souk, room, video);
  // Frames are answered in order: the catalogue and My orders wait for the video (or 800 ms).
  const videoUp = new Promise((resolve) => {
    const off = souk.on("media", (ev) => { if (ev.kind === "watch" && ev.state !== "connecting") { off(); resolve(); } });
    setTimeout(() => { off(); resolve(); }, souk.mediaState("watch", room) === "connecting" ? 800 : 0);
  });
  const conn = byTestId("conn");
  const showConn = (state) => {
    conn.dataset.state = state;
    conn.textContent = state === "open" ? "" : t(`conn.${state}`);
    document.body.dataset.conn = state;
  };
  souk.on("connection", (ev) => showConn(ev.state));
  onLang(() => showConn(souk.state));
  showConn(souk.state);

  const chat = new ChatPanel(byTestId("stage"), souk, {room}, {max: 60, onError: (err) => ui.toast(explain(err))});
  // Q&A kept here (the button's count); the list (questions.js) loads when the panel shows.
  const qa = {items: new Map(), list: null, loading: null};
  const qaCount = () => {
    const n = [...qa.items.values()].filter((q) => q.status === "open").length;
    byTestId("qa-count").textContent = n ? String(n) : "";
  };
  const qaTake = (q) => { qa.items.set(q.id, {...(qa.items.get(q.id) || {}), ...q}); qaCount(); };
  souk.on("question", (ev) => { if (ev.ch === ch) qaTake(ev); });
  const showQa = () => (qa.loading ||= import("/static/questions.js").then(({QuestionList}) => {
    qa.list = new QuestionList(byTestId("qa"), souk, ch, {room});
    qa.list.render([...qa.items.values()]);
  }));
  ui.onOpen = (name) => { if (name === "side") showQa(); };
  const wide = matchMedia("(min-width: 900px)");
  if (wide.matches) showQa();
  else wide.addEventListener("change", () => { if (wide.matches) showQa(); });
  const shop = new Shop(souk, room);
  const view = new ShopView(shop, souk, {
    sales: byTestId("sales"), teambuys: byTestId("teambuys"), products: byTestId("products"),
    gone: byTestId("gone-sales"), pinned: byTestId("pinned"), flash: byTestId("flash"),
    flashChip: byTestId("flash-chip"), orders: byTestId("orders"), ordersEmpty: byTestId("orders-empty"),
    orderCounts: [byTestId("orders-count"), byTestId("orders-count-2")],
    ticker: byTestId("ticker"), bagCount: byTestId("bag-count"),
  }, ui);
  shop.subscribe(() => {
    byTestId("bag-count-2").textContent = shop.products.size ? `· ${shop.products.size}` : "";
    byTestId("end-orders").textContent = String(shop.orders.size);
  });

  let likes = 0;
  const setLikes = (n, {floating = true} = {}) => {
    const total = Number(n || 0);
    const delta = total - likes;
    likes = total;
    byTestId("likes").textContent = String(likes);
    byTestId("end-likes").textContent = String(likes);
    if (delta <= 0 || !floating) return;
    // Others' hearts float too (a few per update, however many came); mine floated on tap.
    const mine = Math.min(delta, hearts.mine);
    hearts.mine -= mine;
    for (let i = 0; i < Math.min(delta - mine, 3); i++) setTimeout(() => hearts.float(), i * 180);
  };
  const hearts = new Hearts(souk, room);

  const setTitle = (title) => {
    const text = title || t("room.untitled");
    byTestId("title").textContent = text;
    byTestId("end-room").textContent = text;
    document.title = `${text} · Souk`;
    for (const id of ["host-avatar", "host-mini", "end-avatar"]) {
      const el = byTestId(id);
      el.textContent = [...text][0] || "S";
      el.style.setProperty("--hue", String([...text].reduce((a, c) => (a * 31 + c.codePointAt(0)) % 360, 0)));
    }
  };
  let title = "";
  onLang(() => setTitle(title));

  const setState = (state) => {
    shop.state = state || "idle";
    const badge = byTestId("room-state");
    badge.dataset.state = shop.state;
    badge.textContent = t(`state.${shop.state}`);
    stage.setRoomState(shop.state);
    byTestId("endcard").classList.toggle("hidden", shop.state !== "ended");
    view.changed("all");
  };
  onLang(() => setState(shop.state));

  const apply = (snap) => {
    title = snap.title || "";
    setTitle(title);
    byTestId("viewers").textContent = String(snap.viewers ?? 0);
    setLikes(snap.likes, {floating: false});
    shop.fromSnapshot(snap);
    setState(snap.state);
    chat.render(snap.chat);
    qa.items = new Map((snap.questions || []).map((q) => [q.id, q]));
    qaCount();
    if (qa.list) qa.list.render(snap.questions);
    if (snap.draws && snap.draws.length) luckyBag(snap.draws);
  };
  // Lucky draws (福袋): the badge's module is loaded once the room has a draw.
  let lucky = null;
  const luckyBag = async (draws) => {
    if (!lucky) lucky = import("/static/luckybag.js").then((m) => m.luckyBag(souk, room, ui));
    (await lucky).fromSnapshot(draws);
  };
  souk.on("draw", (ev) => { if (ev.ch === ch && !lucky) luckyBag([ev]); });
  apply(await souk.join(room));
  souk.on("resync", (ev) => { if (ev.ch === ch && ev.snapshot) apply(ev.snapshot); });
  souk.on("viewers", (ev) => { if (ev.ch === ch) byTestId("viewers").textContent = String(ev.count); });
  souk.on("likes", (ev) => { if (ev.ch === ch) setLikes(ev.total); });
  souk.on("room", (ev) => { if (ev.ch === ch && ev.title) { title = ev.title; setTitle(title); } });
  souk.on("state", (ev) => { if (ev.ch === ch) setState(ev.state); });
  // After a reconnect: what was bought meanwhile (another tab, a reply lost with the drop).
  souk.on("connection", (ev) => { if (ev.state === "open" && ev.reconnected) shop.loadMine(); });

  byTestId("ask-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = byTestId("ask-input");
    const text = input.value.trim();
    if (!text) return;
    try {
      const q = await souk.ask(room, text);
      if (q) { qaTake(q); if (qa.list) qa.list.upsert(q); }
      input.value = "";
      byTestId("q-error").textContent = "";
    } catch (err) {
      byTestId("q-error").textContent = explain(err);
    }
  });
  byTestId("bag-open").addEventListener("click", () => ui.open("bag"));
  byTestId("qa-open").addEventListener("click", () => ui.open("side", byTestId("qa")));
  byTestId("orders-link").addEventListener("click", () => ui.openOrders());
  byTestId("end-orders-open").addEventListener("click", () => ui.openOrders());

  await videoUp;
  await Promise.all([shop.loadProducts(), shop.loadMine()]);
  const team = new URLSearchParams(location.search).get("team");
  if (team) view.openJoinSheet(team);
  document.body.dataset.ready = "1"; // every control is wired (tests wait for this)
}

/** The poster says why there is no picture: waiting, connecting, stalled, ended, unavailable. */
class Stage {
  constructor(souk, room, video) {
    this.souk = souk;
    this.room = room;
    this.video = video;
    this.poster = byTestId("video-status");
    this.text = byTestId("video-status-text");
    this.roomState = "idle";
    this.media = souk.mediaState("watch", room);
    this.watching = this.media !== "stopped"; // live.js started a watch before the snapshot
    this.lastFrame = 0;
    this.frames = 0;
    souk.on("media", (ev) => {
      if (ev.kind !== "watch" || ev.room !== room) return;
      this.media = ev.state;
      this.draw();
    });
    const onFrame = () => {
      this.frames += 1;
      this.lastFrame = performance.now();
      if (this.poster.dataset.state !== "playing") this.draw();
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
    const unmute = byTestId("unmute");
    unmute.addEventListener("click", () => { video.muted = false; video.play().catch(() => {}); });
    video.addEventListener("volumechange", () => this.draw());
    video.addEventListener("resize", () => {
      // A landscape stream is shown whole (not cropped to a sliver) on a portrait screen.
      video.classList.toggle("landscape", video.videoWidth > video.videoHeight);
    });
    setInterval(() => this.draw(), 500);
    onLang(() => this.draw());
  }

  setRoomState(state) {
    this.roomState = state;
    if (state === "live" && !this.watching) {
      this.watching = true;
      this.souk.watch(this.video, this.room).catch(() => {});
    } else if (state !== "live" && this.watching) {
      this.watching = false;
      this.souk.unwatch(this.room).catch(() => {});
    }
    this.draw();
  }

  draw() {
    let state;
    const fresh = this.lastFrame && performance.now() - this.lastFrame < STALL_MS;
    if (this.roomState === "ended") state = "ended";
    else if (this.media === "failed") state = "unavailable";
    else if (this.roomState !== "live" || this.media === "waiting") state = "waiting";
    else if (fresh && this.media === "connected") state = "playing";
    else if (this.media === "connected" && this.frames) state = "stalled";
    else state = "connecting";
    this.poster.dataset.state = state;
    this.poster.classList.toggle("hidden", state === "playing" || state === "ended");
    byTestId("unmute").classList.toggle("hidden", state !== "playing" || !this.video.muted);
    this.text.textContent = t(`stage.${state}`);
    document.body.dataset.video = state;
  }
}

/** Hearts: taps float at once and go to the server as one `like` per 300 ms. */
class Hearts {
  constructor(souk, room) {
    this.souk = souk;
    this.room = room;
    this.box = byTestId("hearts");
    this.pending = 0;
    this.mine = 0; // my taps not yet seen in a likes total (so they do not float twice)
    this.timer = null;
    byTestId("heart").addEventListener("click", () => this.tap());
    byTestId("stage").addEventListener("dblclick", (e) => {
      if (e.target.closest("button, input, .pinned, .flash-pop, .chat-overlay")) return;
      this.tap();
    });
    souk.on("connection", (ev) => { if (ev.state === "open" && this.pending) this.flush(); });
  }

  tap() {
    this.pending += 1;
    this.mine += 1;
    this.float();
    if (!this.timer) this.timer = setTimeout(() => this.flush(), 300);
  }

  async flush() {
    this.timer = null;
    const n = Math.min(this.pending, 100);
    if (!n) return;
    this.pending -= n;
    try {
      await this.souk.like(this.room, n);
    } catch (err) {
      this.pending += n; // sent again when the connection is back
    }
  }

  float() {
    if (reducedMotion.matches) return;
    const heart = h("span", {class: "heart-float", "aria-hidden": "true"}, "♥");
    heart.style.setProperty("--x", `${Math.round(Math.random() * 40 - 20)}px`);
    heart.style.setProperty("--hue", String(Math.round(335 + Math.random() * 35) % 360));
    this.box.append(heart);
    setTimeout(() => heart.remove(), 1600);
  }
}

/** Bottom sheets on a phone; on a desktop only the modal opens over the page. */
class Sheets {
  constructor() {
    this.scrim = byTestId("scrim");
    this.toastEl = byTestId("toast");
    this.scrim.addEventListener("click", () => this.close());
    for (const id of ["bag-close", "side-close", "modal-close"]) byTestId(id).addEventListener("click", () => this.close());
    document.addEventListener("keydown", (e) => { if (e.key === "Escape") this.close(); });
  }

  open(name, target) {
    const now = document.body.dataset.sheet;
    this.back = name === "modal" && now !== "modal" ? now : ""; // closing the modal goes back there
    document.body.dataset.sheet = name;
    this.scrim.classList.remove("hidden");
    if (this.onOpen) this.onOpen(name);
    if (target) {
      requestAnimationFrame(() => {
        target.scrollIntoView({block: "nearest", behavior: reducedMotion.matches ? "auto" : "smooth"});
        target.classList.add("spotlight");
        setTimeout(() => target.classList.remove("spotlight"), 1500);
      });
    }
  }

  close() {
    const back = document.body.dataset.sheet === "modal" && this.back;
    this.back = "";
    document.body.dataset.sheet = back || "";
    this.scrim.classList.toggle("hidden", !back);
  }

  openBag(target) { this.open("bag", target); }
  openOrders() { this.open("side", byTestId("orders-part")); }

  sheet(name, title, body) {
    byTestId("modal").dataset.name = name;
    byTestId("modal-title").textContent = title;
    fill(byTestId("modal-body"), body);
    this.open("modal");
  }

  toast(text, action) {
    const el = this.toastEl;
    fill(el, h("span", {}, text), action ? h("button", {class: "link", type: "button", onclick: () => { action.onclick(); el.classList.add("hidden"); }}, action.label) : null);
    el.classList.remove("hidden");
    clearTimeout(this.toastTimer);
    this.toastTimer = setTimeout(() => el.classList.add("hidden"), 3500);
  }
}

function fatal(err) {
  const box = byTestId("fatal");
  box.classList.remove("hidden");
  fill(box, h("b", {}, t("fatal.title")), h("p", {}, explain(err)), h("p", {class: "meta"}, t("fatal.hint")));
  byTestId("video-status-text").textContent = t("stage.unavailable");
  console.warn("souk: the page could not start", err);
}

