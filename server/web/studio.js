// The streamer's page: camera preview, go live / end (the SDK republishes by itself after a
// drop or a server restart), stream health, the products with their pictures (pin, sell),
// flash sales and team buys, the live sales figures, the most engaged viewers, the question
// queue and the chat with moderation.
import {boot, fail, toast} from "/static/boot.js";
import {ChatPanel} from "/static/chat.js";
import {StreamHealth} from "/static/health.js";
import {avatar, byTestId, explain, fill, h, money, productImage} from "/static/dom.js";
import {onLang, t} from "/static/i18n.js";
import {QuestionList} from "/static/questions.js";
import {answering, moderate, moderation} from "/static/staff.js";
import {LiveSales} from "/static/sales.js";
import {StudioDraws} from "/static/draws.js";

/** A price typed by a person ("12.5") to integer cents, or NaN. */
function toCents(text) {
  const s = String(text).trim();
  if (!/^\d+(\.\d{1,2})?$/.test(s)) return NaN;
  const [whole, frac = ""] = s.split(".");
  return Number(whole) * 100 + Number((frac + "00").slice(0, 2));
}

const MAX_IMAGE_BYTES = 2 * 1024 * 1024;
const IMAGE_TYPES = ["image/png", "image/jpeg", "image/webp"];

async function main() {
  const {souk, id: room} = await boot("streamer", "studio");
  const ch = `room:${room}`;
  const studioError = (err) => { byTestId("studio-error").textContent = err ? explain(err) : ""; };
  const sellError = (err) => { byTestId("sell-error").textContent = err ? (err.code ? explain(err) : err.message) : ""; };
  const chat = new ChatPanel(byTestId("chat"), souk, {room}, {decorate: moderation});
  byTestId("mod-open").addEventListener("click", () => moderate(chat, null));
  const questions = new QuestionList(byTestId("qa"), souk, ch, {actions: answering, room,
    onCount: (n) => { byTestId("qa-open-count").textContent = String(n); }});
  const sales = new LiveSales(souk, room, {sales: byTestId("sales"), teambuys: byTestId("teambuys"),
    empty: byTestId("sales-empty"), onError: sellError});
  const products = new Products(souk, room, sellError);
  const fans = new TopFans(souk, ch);
  const health = new StreamHealth(souk, room);
  const go = new GoLive(souk, room, studioError);
  const draws = new StudioDraws(souk, room, {form: byTestId("draw-form"), list: byTestId("draws-list"),
    empty: byTestId("draws-empty"), error: byTestId("draw-error"),
    onStarted: () => { toast(t("draw.started")); products.load(); }});

  let title = "";
  const showTitle = () => { byTestId("title").textContent = title || t("room.untitled"); document.title = `${t("studio.brand")} · ${title || room}`; };
  onLang(showTitle);
  const apply = (snap) => {
    title = snap.title || "";
    showTitle();
    if (snap.title) byTestId("title-input").value = snap.title;
    go.setRoomState(snap.state);
    byTestId("viewers").textContent = String(snap.viewers ?? 0);
    byTestId("likes").textContent = String(snap.likes ?? 0);
    health.take(snap);
    chat.render(snap.chat);
    fans.render(snap.chat, snap.questions);
    questions.render(snap.questions);
    sales.render(snap.sales, snap.teambuys);
    draws.render(snap.draws);
    products.pinned = snap.pinned && snap.pinned.id;
    if (snap.pinned) products.learn(snap.pinned);
    products.draw();
  };
  apply(await souk.join(room));
  draws.load(); // the room's earlier draws, beyond those the snapshot shows
  souk.on("resync", (ev) => { if (ev.ch === ch && ev.snapshot) apply(ev.snapshot); });
  souk.on("viewers", (ev) => { if (ev.ch === ch) byTestId("viewers").textContent = String(ev.count); });
  souk.on("likes", (ev) => { if (ev.ch === ch) byTestId("likes").textContent = String(ev.total); });
  souk.on("state", (ev) => { if (ev.ch === ch) go.setRoomState(ev.state); });
  souk.on("room", (ev) => { if (ev.ch === ch && ev.title) { title = ev.title; showTitle(); } });
  souk.on("pinned", (ev) => { if (ev.ch === ch) { products.pinned = ev.product && ev.product.id; products.draw(); } });
  souk.on("question_overdue", (ev) => {
    const q = questions.items.get(ev.question);
    byTestId("overdue").append(h("li", {class: "error", testid: "overdue-item"},
      t("qa.overdue", {text: q ? q.text : t("qa.aQuestion"), min: Math.max(1, Math.round((ev.age_s || 0) / 60))})));
  });

  byTestId("title-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const r = await souk.roomCreate(room, {title: byTestId("title-input").value.trim()});
      title = r.title;
      showTitle();
      toast(t("room.saved"));
      studioError(null);
    } catch (err) { studioError(err); }
  });
  byTestId("link-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const ids = byTestId("link-input").value.split(/[,，\s]+/).map((s) => s.trim()).filter(Boolean);
    try {
      const linked = (await souk.linkGroups(room, ids)) || [];
      byTestId("link-status").textContent = t("room.linked", {n: linked.length});
      byTestId("link-input").value = "";
      studioError(null);
    } catch (err) { studioError(err); }
  });

  const num = (id) => Number(byTestId(id).value);
  byTestId("sale-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const price = toCents(byTestId("sale-price").value);
    if (!Number.isFinite(price)) { sellError({message: t("f.priceHint")}); return; }
    try {
      const startsIn = num("sale-starts-in") || 0; // seconds; the start is on the server's clock
      const sale = await souk.saleCreate(room, {product: byTestId("sale-product").value, price,
        stock: num("sale-stock"), durationS: num("sale-duration"), perUserLimit: num("sale-limit"),
        startsAt: startsIn > 0 ? Math.round(souk.serverNow()) + startsIn * 1000 : undefined});
      sales.upsert(sale);
      products.load(); // the sale's stock is reserved from the product's
      sellError(null);
      toast(t("sale.started"));
      refreshStats();
    } catch (err) { sellError(err); }
  });
  byTestId("teambuy-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const price = toCents(byTestId("teambuy-price").value);
    if (!Number.isFinite(price)) { sellError({message: t("f.priceHint")}); return; }
    try {
      const offer = await souk.teambuyCreate(room, {product: byTestId("teambuy-product").value, price,
        size: num("teambuy-size"), windowS: num("teambuy-window")});
      if (offer && offer.id) sales.upsertOffer(offer);
      products.load();
      sellError(null);
      toast(t("team.started"));
    } catch (err) { sellError(err); }
  });

  // Live sales figures: refreshed after sale events (coalesced) and every 3 s while visible.
  let statsTimer = null;
  async function refreshStats() {
    statsTimer = null;
    try {
      const st = await souk.salesStats(room);
      byTestId("stat-orders").textContent = String(st.orders ?? 0);
      byTestId("stat-units").textContent = String(st.units ?? 0);
      const cur = (st.products && st.products[0] && st.products[0].currency) || undefined;
      byTestId("stat-revenue").textContent = money(st.revenue ?? 0, cur);
    } catch { /* offline or an older server: the figures wait for the next tick */ }
  }
  souk.on("sale", (ev) => { if (ev.ch === ch && !statsTimer) statsTimer = setTimeout(refreshStats, 300); });
  setInterval(() => { if (document.visibilityState === "visible" && souk.state === "open") refreshStats(); }, 3000);
  refreshStats();
  document.body.dataset.ready = "1"; // every control is wired (tests wait for this)
}

/**
 * The camera, go live / end, and what the stream is doing. The page follows the SDK's
 * `media` events for the publish: after a server restart the SDK offers again by itself,
 * and a peer connection it replaced never shows "failed" here.
 */
class GoLive {
  constructor(souk, room, onError) {
    this.souk = souk;
    this.room = room;
    this.onError = onError;
    this.state = "idle";
    this.media = "stopped";
    this.goBtn = byTestId("go-live");
    this.endBtn = byTestId("end");
    this.status = byTestId("media-status");
    const preview = byTestId("preview");
    const cover = byTestId("preview-status");
    // Portrait, like the phones that watch; a landscape webcam is cropped to it by the browser.
    this.camera = navigator.mediaDevices.getUserMedia({
      video: {width: {ideal: 360}, height: {ideal: 640}, frameRate: {ideal: 24}}, audio: true,
    }).then((stream) => {
      preview.srcObject = stream;
      cover.classList.add("hidden");
      return stream;
    }).catch((err) => {
      cover.dataset.i18n = "";
      cover.textContent = t("studio.camera.failed", {why: err.name || String(err)});
      return null;
    });
    souk.on("media", (ev) => {
      if (ev.kind !== "publish" || ev.room !== room) return;
      this.media = ev.state;
      this.draw();
    });
    this.goBtn.addEventListener("click", () => this.goLive());
    this.endBtn.addEventListener("click", () => this.end());
    onLang(() => this.draw());
  }

  setRoomState(state) {
    this.state = state || "idle";
    const pill = byTestId("room-state");
    pill.dataset.state = this.state;
    pill.textContent = t(`state.${this.state}`);
    this.draw();
  }

  draw() {
    const live = this.state === "live";
    const publishing = this.media !== "stopped" && this.media !== "failed";
    this.goBtn.textContent = live && !publishing ? t("studio.resume") : t("studio.goLive");
    this.goBtn.disabled = this.busy || (live && publishing);
    this.endBtn.disabled = this.busy || !live;
    this.status.dataset.state = this.media;
    this.status.textContent = this.media === "stopped" ? (live ? t("pub.notPublishing") : "") : t(`pub.${this.media}`);
    const onair = byTestId("onair");
    onair.classList.toggle("hidden", !(live && this.media === "connected"));
    onair.textContent = t("state.live");
  }

  async goLive() {
    this.busy = true;
    this.draw();
    this.onError(null);
    try {
      const stream = await this.camera;
      if (!stream) throw Object.assign(new Error("camera"), {code: "camera"});
      await this.souk.roomState(this.room, "live");
      this.setRoomState("live");
      // Not awaited: the intent keeps trying by itself; failures arrive as media events.
      this.souk.publish(stream, this.room).catch((err) => this.onError(err));
    } catch (err) {
      this.onError(err);
    } finally {
      this.busy = false;
      this.draw();
    }
  }

  async end() {
    this.busy = true;
    this.draw();
    try {
      await this.souk.unpublish(this.room).catch(() => {});
      await this.souk.roomState(this.room, "ended");
      this.setRoomState("ended");
    } catch (err) {
      this.onError(err);
    } finally {
      this.busy = false;
      this.draw();
    }
  }
}

/** The viewers who talk most (chat, questions) since the page opened, from what it sees. */
class TopFans {
  constructor(souk, ch) {
    this.souk = souk;
    this.people = new Map(); // user -> {name, chats, questions}
    this.seenQ = new Set();
    souk.on("chat", (ev) => { if (ev.ch === ch) { this.count(ev, "chats"); this.draw(); } });
    souk.on("question", (ev) => { if (ev.ch === ch && ev.status === "open" && !this.seenQ.has(ev.id)) { this.seenQ.add(ev.id); this.count(ev, "questions"); this.draw(); } });
    onLang(() => this.draw());
  }

  count(m, what) {
    if (!m.user || ["streamer", "moderator", "admin"].includes(m.role) || (this.souk.user && m.user === this.souk.user.id)) return;
    const p = this.people.get(m.user) || {name: m.name, chats: 0, questions: 0};
    p.name = m.name || p.name;
    p[what] += 1;
    this.people.set(m.user, p);
  }

  render(chat, questions) {
    this.people.clear();
    this.seenQ.clear();
    for (const m of chat || []) this.count(m, "chats");
    for (const q of questions || []) { this.seenQ.add(q.id); this.count(q, "questions"); }
    this.draw();
  }

  draw() {
    const score = (p) => p.chats + 2 * p.questions;
    const top = [...this.people.entries()].sort((a, b) => score(b[1]) - score(a[1])).slice(0, 5);
    fill(byTestId("fans"), top.map(([user, p], i) => h("li", {testid: "fan", dataset: {user}},
      h("span", {class: "meta"}, String(i + 1)), avatar(p.name, {key: user, size: "sm"}),
      h("span", {class: "grow"}, p.name || t("chat.someone")),
      h("span", {class: "meta"}, t("fans.score", {chats: p.chats, questions: p.questions})))));
    byTestId("fans-empty").classList.toggle("hidden", top.length > 0);
  }
}

/**
 * The shop's products (from the `products` op): pin one, sell one. New products take a
 * picture by address (this server's own, e.g. /static/products/tea.svg: the pages' CSP
 * loads images from this origin only) or by upload (PNG, JPEG or WebP up to 2 MB).
 */
class Products {
  constructor(souk, room, onError) {
    this.souk = souk;
    this.room = room;
    this.onError = onError;
    this.pinned = null;
    this.items = [];
    byTestId("product-form").addEventListener("submit", (e) => { e.preventDefault(); this.create(); });
    onLang(() => this.draw());
    this.load();
  }

  learn(p) {
    if (p && p.id && !this.items.some((x) => x.id === p.id)) this.items.push(p);
  }

  async load() {
    try {
      this.items = (await this.souk.products()).slice().sort((a, b) => (b.created_at || 0) - (a.created_at || 0));
      this.draw();
    } catch { /* an older server: the products this page creates are listed */ }
  }

  imageUrl() {
    const raw = byTestId("product-image-url").value.trim();
    if (!raw) return undefined;
    let url;
    try { url = new URL(raw, location.origin); } catch { url = null; }
    if (!url || url.origin !== location.origin) throw new Error(t("f.imageOrigin"));
    return url.pathname + url.search;
  }

  imageFile() {
    const file = byTestId("product-image-file").files[0];
    if (!file) return null;
    if (!IMAGE_TYPES.includes(file.type)) throw new Error(t("f.imageType"));
    if (file.size > MAX_IMAGE_BYTES) throw new Error(t("f.imageSize"));
    return file;
  }

  async create() {
    const price = toCents(byTestId("product-price").value);
    const stock = Number(byTestId("product-stock").value);
    let image, file;
    try {
      if (!Number.isFinite(price) || !Number.isInteger(stock) || stock < 0) throw new Error(t("f.productHint"));
      image = this.imageUrl();
      file = this.imageFile();
    } catch (err) {
      this.onError({message: err.message});
      return;
    }
    try {
      let p = await this.souk.productCreate({title: byTestId("product-title").value.trim(), price, stock, image});
      byTestId("product-form").reset();
      if (file) p = await this.upload(p, file);
      this.items = [p, ...this.items.filter((x) => x.id !== p.id)];
      this.onError(null);
      this.draw();
      for (const id of ["sale-product", "teambuy-product", "draw-product"]) byTestId(id).value = p.id; // sell what was just made
      toast(t("products.created", {title: p.title}));
    } catch (err) { this.onError(err); }
  }

  /** POST /api/products/<id>/image with the file's bytes; the server answers the product. */
  async upload(p, file) {
    let res;
    try {
      res = await fetch(`/api/products/${encodeURIComponent(p.id)}/image`, {
        method: "POST", body: file, headers: {"Authorization": `Bearer ${this.souk.token}`, "Content-Type": file.type},
      });
    } catch {
      throw new Error(t("f.imageUploadFailed"));
    }
    const body = await res.json().catch(() => ({}));
    if (!res.ok) {
      const code = body.error || "";
      throw new Error(code === "invalid" ? t("f.imageRefused") : res.status === 404 || res.status === 405 ? t("f.imageNoUpload") : t("f.imageUploadFailed"));
    }
    if (body.product) return body.product;
    return {...p, image: body.image || body.url || p.image};
  }

  draw() {
    fill(byTestId("products"), this.items.map((p) => {
      const pinned = this.pinned === p.id;
      return h("li", {testid: "product", class: pinned ? "pinned" : "", dataset: {product: p.id}},
        productImage(p, "thumb sm"),
        h("div", {class: "body"}, h("b", {class: "title"}, p.title),
          h("span", {class: "meta"}, `${money(p.price, p.currency)} · ${t("products.stock", {n: p.stock})}`)),
        h("button", {class: pinned ? "small" : "small primary", type: "button", testid: "pin", disabled: pinned,
          onclick: () => this.pin(p.id)}, pinned ? t("products.pinned") : t("products.pin")));
    }));
    for (const id of ["sale-product", "teambuy-product", "draw-product"]) {
      const sel = byTestId(id), was = sel.value;
      fill(sel, this.items.map((p) => h("option", {value: p.id}, p.title)));
      if (was) sel.value = was;
    }
  }

  async pin(id) {
    try {
      await this.souk.pin(this.room, id);
      this.pinned = id;
      this.draw();
    } catch (err) { this.onError(err); }
  }
}

main().catch(fail);
