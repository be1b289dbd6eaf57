// The streamer's page: camera preview, go live / end, products and pin, flash sales and group
// buys, live sales figures, the question queue, chat with moderation.
import {boot, fail} from "/static/boot.js";
import {ChatPanel} from "/static/chat.js";
import {byTestId, explain, h, money, toCents} from "/static/dom.js";
import {QuestionList} from "/static/questions.js";
import {SaleCards, TeamBuyCards} from "/static/sales.js";

async function main() {
  const {souk, id: room} = await boot("streamer");
  const ch = `room:${room}`;
  const chat = new ChatPanel(byTestId("chat"), souk, {room}, {moderation: true});
  const questions = new QuestionList(byTestId("qa"), souk, ch, {mode: "staff", room});
  const sales = new SaleCards(byTestId("sales"), souk, room, {mode: "studio"});
  const teambuys = new TeamBuyCards(byTestId("teambuys"), souk, room, {mode: "studio"});
  const products = new Products(souk, room);
  const studioError = (err) => { byTestId("studio-error").textContent = err ? explain(err) : ""; };

  const apply = (snap) => {
    byTestId("title").textContent = snap.title || `Room ${room}`;
    if (snap.title) byTestId("title-input").value = snap.title;
    setState(snap.state);
    byTestId("viewers").textContent = snap.viewers ?? 0;
    byTestId("likes").textContent = snap.likes ?? 0;
    chat.render(snap.chat);
    questions.render(snap.questions);
    sales.render(snap.sales);
    teambuys.render(snap.teambuys);
    products.pinned = snap.pinned && snap.pinned.id;
    products.draw();
  };
  apply(await souk.join(room));
  souk.on("resync", (ev) => { if (ev.ch === ch && ev.snapshot) apply(ev.snapshot); });
  souk.on("viewers", (ev) => { if (ev.ch === ch) byTestId("viewers").textContent = ev.count; });
  souk.on("likes", (ev) => { if (ev.ch === ch) byTestId("likes").textContent = ev.total; });
  souk.on("state", (ev) => { if (ev.ch === ch) setState(ev.state); });
  souk.on("pinned", (ev) => { if (ev.ch === ch) { products.pinned = ev.product && ev.product.id; products.draw(); } });
  souk.on("question_overdue", (ev) => {
    byTestId("overdue").append(h("li", {class: "error", testid: "overdue-item"}, `question ${ev.question} waiting ${ev.age_s}s`));
  });

  // Camera and microphone preview (fake devices in tests); go live publishes this stream.
  const preview = byTestId("preview");
  const status = byTestId("preview-status");
  // Not awaited here: the page's controls work while the camera starts; go live waits for it.
  const camera = navigator.mediaDevices.getUserMedia({video: {width: 640, height: 360}, audio: true})
    .then((stream) => {
      preview.srcObject = stream;
      status.classList.add("hidden");
      return stream;
    })
    .catch((err) => {
      status.textContent = `camera unavailable: ${err.name || err}`;
      return null;
    });

  const goLive = byTestId("go-live"), end = byTestId("end"), mediaStatus = byTestId("media-status");
  // Reloaded while live: "end" works at once, "go live" publishes the camera again.
  if (byTestId("room-state").textContent === "live") end.disabled = false;
  goLive.addEventListener("click", async () => {
    goLive.disabled = true;
    studioError(null);
    try {
      const stream = await camera;
      await souk.roomState(room, "live");
      if (stream) {
        mediaStatus.textContent = "publishing…";
        const pc = await souk.publish(stream, room);
        const show = () => { mediaStatus.textContent = `video ${pc.connectionState}`; mediaStatus.dataset.state = pc.connectionState; };
        pc.addEventListener("connectionstatechange", show);
        show();
      }
      end.disabled = false;
    } catch (err) {
      studioError(err);
      goLive.disabled = false;
    }
  });
  end.addEventListener("click", async () => {
    end.disabled = true;
    try {
      await souk.unpublish(room).catch(() => {});
      await souk.roomState(room, "ended");
      mediaStatus.textContent = "ended";
    } catch (err) {
      studioError(err);
    }
    goLive.disabled = false;
  });

  byTestId("title-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const r = await souk.roomCreate(room, {title: byTestId("title-input").value.trim()});
      byTestId("title").textContent = r.title;
      studioError(null);
    } catch (err) { studioError(err); }
  });
  byTestId("link-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const ids = byTestId("link-input").value.split(",").map((s) => s.trim()).filter(Boolean);
    try {
      const linked = await souk.linkGroups(room, ids);
      byTestId("studio-error").textContent = "";
      byTestId("media-status").textContent = `linked: ${(linked || []).map((g) => g.id || g).join(", ")}`;
    } catch (err) { studioError(err); }
  });

  const commerceError = (err) => { byTestId("commerce-error").textContent = err ? explain(err) : ""; };
  const num = (id) => Number(byTestId(id).value);
  byTestId("sale-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const price = toCents(byTestId("sale-price").value);
    if (!Number.isFinite(price)) { commerceError({message: "price like 12.50"}); return; }
    try {
      const startsIn = num("sale-starts-in") || 0; // seconds; the start is on the server's clock
      const sale = await souk.saleCreate(room, {product: byTestId("sale-product").value, price,
        stock: num("sale-stock"), durationS: num("sale-duration"), perUserLimit: num("sale-limit"),
        startsAt: startsIn > 0 ? Math.round(souk.serverNow()) + startsIn * 1000 : undefined});
      sales.upsert(sale);
      products.load(); // the sale's stock is reserved from the product's
      commerceError(null);
      refreshStats();
    } catch (err) { commerceError(err); }
  });
  byTestId("teambuy-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const price = toCents(byTestId("teambuy-price").value);
    if (!Number.isFinite(price)) { commerceError({message: "price like 12.50"}); return; }
    try {
      const offer = await souk.teambuyCreate(room, {product: byTestId("teambuy-product").value, price,
        size: num("teambuy-size"), windowS: num("teambuy-window")});
      if (offer && offer.id) teambuys.upsertOffer(offer);
      products.load();
      commerceError(null);
    } catch (err) { commerceError(err); }
  });

  // Live sales panel: refreshed on every sale event (coalesced) and every 3 s while open.
  let statsTimer = null;
  async function refreshStats() {
    statsTimer = null;
    try {
      const st = await souk.salesStats(room);
      byTestId("stat-orders").textContent = st.orders ?? 0;
      byTestId("stat-units").textContent = st.units ?? 0;
      const cur = (st.products && st.products[0] && st.products[0].currency) || undefined;
      byTestId("stat-revenue").textContent = money(st.revenue ?? 0, cur);
    } catch (err) {
      if (err.code === "unknown_op") return;
    }
  }
  souk.on("sale", (ev) => { if (ev.ch === ch && !statsTimer) statsTimer = setTimeout(refreshStats, 300); });
  setInterval(() => { if (document.visibilityState === "visible") refreshStats(); }, 3000);
  refreshStats();
  document.body.dataset.ready = "1"; // every control is wired (tests wait for this)
}

// The shop's products, to pin and to put on sale: from the `products` op; a server without
// it gets the ones this studio created (kept per room in localStorage).
class Products {
  constructor(souk, room) {
    this.souk = souk;
    this.room = room;
    this.key = `souk.products.${room}`;
    this.pinned = null;
    try { this.items = JSON.parse(localStorage.getItem(this.key) || "[]"); } catch { this.items = []; }
    byTestId("product-form").addEventListener("submit", (e) => { e.preventDefault(); this.create(); });
    this.draw();
    this.load();
  }

  async load() {
    try {
      this.items = (await this.souk.products()).slice().sort((a, b) => (b.created_at || 0) - (a.created_at || 0));
      this.draw();
    } catch { /* no listing op: keep the local list */ }
  }

  async create() {
    const price = toCents(byTestId("product-price").value);
    const stock = Number(byTestId("product-stock").value);
    const error = byTestId("commerce-error");
    if (!Number.isFinite(price) || !Number.isInteger(stock)) { error.textContent = "price like 12.50, stock a whole number"; return; }
    try {
      const p = await this.souk.productCreate({title: byTestId("product-title").value.trim(), price, stock});
      this.items = [p, ...this.items.filter((x) => x.id !== p.id)].slice(0, 50);
      localStorage.setItem(this.key, JSON.stringify(this.items));
      byTestId("product-title").value = "";
      error.textContent = "";
      this.draw();
      for (const id of ["sale-product", "teambuy-product"]) byTestId(id).value = p.id; // sell what was just made
    } catch (err) { error.textContent = explain(err); }
  }

  draw() {
    byTestId("products").replaceChildren(...this.items.map((p) => h("li", {testid: "product", dataset: {product: p.id}},
      h("span", {class: "actions"}, h("button", {class: "small", testid: "pin", disabled: this.pinned === p.id,
        onclick: () => this.pin(p.id)}, this.pinned === p.id ? "pinned" : "pin")),
      h("b", {}, p.title), " ", money(p.price, p.currency), h("span", {class: "meta"}, ` · stock ${p.stock}`))));
    for (const id of ["sale-product", "teambuy-product"]) {
      const sel = byTestId(id), was = sel.value;
      sel.replaceChildren(...this.items.map((p) => h("option", {value: p.id}, p.title)));
      if (was) sel.value = was;
    }
  }

  async pin(id) {
    try { await this.souk.pin(this.room, id); this.pinned = id; this.draw(); } catch (err) { byTestId("commerce-error").textContent = explain(err); }
  }
}

function setState(state) {
  const el = byTestId("room-state");
  el.textContent = state || "idle";
  el.className = `pill ${state === "live" ? "live" : ""}`;
}

main().catch(fail);
