// The viewer's shop: what the room sells and what this shopper bought (orders, teams, limits),
// shown in the bag, the pinned card, the flash-sale pop-up, My orders / teams and the ticker.
// One model, many views, updated in place (keyed by id): a stock tick never replaces a button
// under a finger.
import {clockText, explain, fill, h, money, productImage} from "/static/dom.js";
import {onLang, t} from "/static/i18n.js";

const GONE = new Set(["ended", "sold_out", "cancelled"]);
const LIVE_ORDER = new Set(["confirmed", "pending"]);

/** The model: fed by the snapshot, events on room:<id> and user:<me>, and our own replies. */
export class Shop {
  constructor(souk, room) {
    this.souk = souk;
    this.room = room;
    this.ch = `room:${room}`;
    this.products = new Map();
    this.sales = new Map();
    this.offers = new Map();
    this.teams = new Map();
    this.orders = new Map();
    this.myTeamIds = new Set();
    this.pinned = null;
    this.state = "idle";
    this.listeners = new Set();
    const mine = (ev) => ev.ch === this.ch;
    souk.on("sale", (ev) => { if (mine(ev)) this.upsertSale(ev); });
    souk.on("teambuy", (ev) => { if (mine(ev)) this.upsertOffer(ev); });
    souk.on("team", (ev) => { if (mine(ev)) this.upsertTeam(ev); });
    souk.on("pinned", (ev) => { if (mine(ev)) { this.pinned = ev.product || null; this.learn(ev.product); this.changed("pinned"); } });
    souk.on("order", (ev) => { if (!ev.room || ev.room === room) this.addOrder(ev); });
  }

  subscribe(fn) { this.listeners.add(fn); }
  changed(what, item) { for (const fn of this.listeners) fn(what, item); }

  get me() { return this.souk.user ? this.souk.user.id : null; }

  learn(p) {
    if (p && p.id && p.title) this.products.set(p.id, {...(this.products.get(p.id) || {}), ...p});
  }

  fromSnapshot(snap) {
    this.state = snap.state || "idle";
    this.pinned = snap.pinned || null;
    this.learn(snap.pinned);
    for (const s of snap.sales || []) this.upsertSale(s, false);
    for (const o of snap.teambuys || []) this.upsertOffer(o, false);
    this.changed("all");
  }

  async loadProducts() {
    try {
      for (const p of await this.souk.products()) this.learn(p);
      this.changed("products");
    } catch { /* a server without the catalogue op: sales and pins still name their products */ }
  }

  /** My orders and teams, for a page opened (or reloaded) after buying. */
  async loadMine() {
    try {
      for (const o of await this.souk.ordersMine()) this.addOrder(o, false);
    } catch { /* shown empty; order events still arrive */ }
    try {
      const teams = await this.souk.teamsMine();
      for (const tm of teams || []) this.upsertTeam(tm, false);
    } catch { /* older server (unknown_op): the orders name our teams and their status */ }
    this.changed("all");
  }

  upsertSale(s, notify = true) {
    const merged = {...(this.sales.get(s.id) || {}), ...s};
    this.sales.set(s.id, merged);
    this.learn({id: s.product, title: s.title, image: s.image, price: s.list_price, currency: s.currency});
    if (notify) this.changed("sale", merged);
  }

  upsertOffer(o, notify = true) {
    const merged = {...(this.offers.get(o.id) || {}), ...o};
    this.offers.set(o.id, merged);
    this.learn({id: o.product, title: o.title, image: o.image, price: o.list_price, currency: o.currency});
    for (const tm of o.teams || []) this.upsertTeam(tm, false);
    if (notify) this.changed("offer", merged);
  }

  upsertTeam(tm, notify = true) {
    const merged = {...(this.teams.get(tm.id) || {}), ...tm};
    this.teams.set(tm.id, merged);
    if ((merged.members || []).some((m) => m.user === this.me)) this.myTeamIds.add(tm.id);
    if (notify) this.changed("team", merged);
  }

  addOrder(o, notify = true) {
    this.orders.set(o.id, {...(this.orders.get(o.id) || {}), ...o});
    if (o.team) this.myTeamIds.add(o.team);
    if (notify) this.changed("order", o);
  }

  product(id) { return this.products.get(id) || null; }

  /** Units this shopper holds in a sale (what its per-person limit counts). */
  unitsBought(saleId) {
    let n = 0;
    for (const o of this.orders.values()) if (o.sale === saleId && LIVE_ORDER.has(o.status)) n += Number(o.qty || 0);
    return n;
  }

  /** A sale of this product that one can buy now (else one about to start). */
  saleFor(productId) {
    const all = [...this.sales.values()].filter((s) => s.product === productId);
    return all.find((s) => s.phase === "live") || all.find((s) => s.phase === "scheduled") || null;
  }

  offerFor(productId) {
    return [...this.offers.values()].find((o) => o.product === productId) || null;
  }

  /** My team in an offer: from the team's members, else from my order for it. */
  myTeam(offerId) {
    let best = null;
    for (const id of this.myTeamIds) {
      const tm = this.teams.get(id);
      if (tm && tm.offer === offerId && (!best || (tm.opened_at || 0) > (best.opened_at || 0))) best = tm;
    }
    if (best) return best;
    const order = [...this.orders.values()].filter((o) => o.offer === offerId && o.team)
      .sort((a, b) => (b.created_at || 0) - (a.created_at || 0))[0];
    if (!order) return null;
    const status = order.status === "pending" ? "open" : order.status;
    return {id: order.team, offer: offerId, status, members: null, size: (this.offers.get(offerId) || {}).size};
  }

  isMine(team) {
    return this.myTeamIds.has(team.id) || (team.members || []).some((m) => m.user === this.me);
  }

  get ended() { return this.state === "ended"; }
}

function saleClock(s, now) {
  if (s.phase === "scheduled" && s.starts_at) return {text: t("sale.startsIn", {t: clockText(s.starts_at - now)}), ms: s.starts_at - now};
  if (s.phase === "live" && s.ends_at) return {text: t("sale.endsIn", {t: clockText(s.ends_at - now)}), ms: s.ends_at - now};
  return {text: "", ms: 0};
}

export function priceTag(price, was, currency, cls = "") {
  return h("span", {class: `price-tag ${cls}`.trim()},
    h("b", {class: "price", testid: "price"}, money(price, currency)),
    was && was > price ? h("s", {class: "was"}, money(was, currency)) : null);
}

export function teamCount(tm) {
  return tm.count ?? (tm.members || []).length;
}

/** Set a card's picture, only when it changed (no reload of the same image on every tick). */
export function picture(card, p) {
  if (card.imageOf === (p.image || "")) return;
  card.imageOf = p.image || "";
  fill(card.img, productImage(p, "thumb"));
}

/** Keep `box`'s children as the rows of `items`, in order, made once per id and updated. */
export function keyed(box, rows, items, make) {
  const keep = new Set(items.map((x) => x.id));
  for (const [id, row] of rows) if (!keep.has(id)) { row.el.remove(); rows.delete(id); }
  return items.map((x, i) => {
    let row = rows.get(x.id);
    if (!row) { row = make(x); rows.set(x.id, row); }
    if (box.children[i] !== row.el) box.insertBefore(row.el, box.children[i] || null);
    return [row, x];
  });
}

class Stepper {
  constructor() {
    this.n = 1;
    this.max = 1;
    this.minus = h("button", {class: "step", type: "button", testid: "qty-minus", onclick: () => this.set(this.n - 1)}, "−");
    this.plus = h("button", {class: "step", type: "button", testid: "qty-plus", onclick: () => this.set(this.n + 1)}, "+");
    this.out = h("output", {class: "qty", testid: "qty"}, "1");
    this.el = h("span", {class: "stepper", testid: "stepper"}, this.minus, this.out, this.plus);
  }

  set(n) {
    this.n = Math.max(1, Math.min(this.max, n));
    this.out.textContent = String(this.n);
    this.minus.disabled = this.n <= 1;
    this.plus.disabled = this.n >= this.max;
  }

  setMax(max) {
    this.max = Math.max(1, max);
    this.set(this.n);
  }
}

/** A flash-sale card (in the bag, or the "flash" pop-up): prices, countdown, stock, quantity, Buy. */
class SaleCard {
  constructor(view, sale, variant) {
    this.view = view;
    this.id = sale.id;
    this.img = h("span", {class: "img-slot"});
    this.title = h("b", {class: "title", testid: "sale-title"});
    this.price = h("span", {class: "price-line", testid: "sale-price"});
    this.badge = h("span", {class: "badge flash-badge"});
    this.phase = h("span", {class: "phase", testid: "sale-phase"});
    this.countdown = h("span", {class: "countdown", testid: "sale-countdown"});
    this.fill = h("i");
    this.bar = h("span", {class: "stockbar", testid: "sale-stockbar"}, this.fill);
    this.stock = h("span", {class: "stock", testid: "sale-stock"});
    this.limit = h("span", {class: "limit meta"});
    this.stepper = new Stepper();
    this.button = h("button", {class: "buy", type: "button", testid: "buy", onclick: () => this.buy()});
    this.result = h("div", {class: "result", testid: "buy-result", "aria-live": "polite"});
    this.el = h("article", {class: `sale-card ${variant}`, testid: variant === "flash" ? "flash-card" : "sale-card",
      dataset: {sale: sale.id}},
    this.img,
    h("div", {class: "body"},
      h("div", {class: "line"}, this.badge, this.title),
      h("div", {class: "line"}, this.price, this.phase),
      h("div", {class: "line l-stock"}, this.bar, this.stock),
      h("div", {class: "line l-time"}, this.countdown, this.limit),
      h("div", {class: "line act"}, this.stepper.el, this.button),
      this.result));
    this.busy = false;
  }

  update(s) {
    const shop = this.view.shop;
    picture(this, s);
    this.title.textContent = s.title || t("product.untitled");
    fill(this.price, priceTag(s.price, s.list_price, s.currency));
    this.badge.textContent = t("sale.badge");
    this.phase.textContent = t(`phase.${s.phase}`);
    this.el.dataset.phase = s.phase;
    this.el.classList.toggle("gone", GONE.has(s.phase));
    const stock = Number(s.stock || 0), left = Number(s.stock_left ?? stock);
    this.fill.style.width = stock ? `${(100 * (stock - left)) / stock}%` : "100%";
    this.stock.textContent = left > 0 ? t("sale.left", {n: left}) : t("sale.none");
    this.stock.dataset.left = String(left);
    const limit = Number(s.per_user_limit || 0);
    const mine = shop.unitsBought(s.id);
    this.limit.textContent = limit ? t("sale.limit", {n: limit}) : "";
    const room = limit ? Math.max(0, limit - mine) : 99;
    this.stepper.el.classList.toggle("hidden", !(limit === 0 || limit > 1) || s.phase !== "live" || room <= 0 || left <= 0);
    this.stepper.setMax(Math.min(room, left, 99));
    let label = t("sale.buy"), can = s.phase === "live" && left > 0 && room > 0 && !shop.ended;
    if (shop.ended) label = t("sale.liveEnded");
    else if (s.phase === "scheduled") label = t("sale.soon");
    else if (s.phase === "sold_out" || (s.phase === "live" && left <= 0)) label = t("sale.soldOut");
    else if (GONE.has(s.phase)) label = t(`phase.${s.phase}`);
    else if (limit && room <= 0) label = t("sale.limitReached");
    if (this.busy) { label = t("sale.buying"); can = false; }
    this.button.textContent = label;
    this.button.disabled = !can;
    this.button.dataset.reason = limit && room <= 0 ? "limit" : s.phase;
    this.tick(s, this.view.souk.serverNow());
  }

  tick(s, now) {
    const c = saleClock(s, now);
    this.countdown.textContent = c.text;
    this.countdown.dataset.msLeft = s.phase === "live" && s.ends_at ? String(Math.max(0, s.ends_at - now)) : "";
    this.countdown.classList.toggle("urgent", s.phase === "live" && c.ms < 10000);
  }

  async buy() {
    const qty = this.stepper.n;
    this.busy = true;
    this.view.refreshSale(this.id);
    try {
      const order = await this.view.souk.buy(this.id, qty);
      this.view.shop.addOrder(order);
      this.show("ordered", t("sale.ordered", {n: order.qty || qty}));
      this.view.toast(t("toast.ordered"), {label: t("toast.viewOrders"), onclick: () => this.view.openOrders()});
    } catch (err) {
      this.show(err.code || "failed", explain(err));
    } finally {
      this.busy = false;
      this.view.refreshSale(this.id);
    }
  }

  show(outcome, text) {
    this.result.dataset.outcome = outcome;
    this.result.className = `result ${outcome === "ordered" ? "ok" : "bad"}`;
    this.result.textContent = text;
  }
}

class ProductRow {
  constructor(view, p) {
    this.view = view;
    this.id = p.id;
    this.img = h("span", {class: "img-slot"});
    this.title = h("b", {class: "title"});
    this.tag = h("span", {class: "tag pinned-tag"});
    this.price = h("span", {class: "price-line"});
    this.go = h("button", {class: "small", type: "button", testid: "product-go", onclick: () => this.view.focusDeal(this.id)});
    this.el = h("li", {class: "item", testid: "bag-product", dataset: {product: p.id}}, this.img,
      h("div", {class: "body"}, h("div", {class: "line"}, this.tag, this.title), this.price), this.go);
  }

  update(p) {
    const shop = this.view.shop;
    picture(this, p);
    this.title.textContent = p.title || t("product.untitled");
    const pinned = shop.pinned && shop.pinned.id === p.id;
    this.tag.textContent = pinned ? t("product.explaining") : "";
    this.tag.classList.toggle("hidden", !pinned);
    const sale = shop.saleFor(p.id), offer = shop.offerFor(p.id);
    if (sale) fill(this.price, priceTag(sale.price, p.price, sale.currency || p.currency));
    else fill(this.price, priceTag(p.price, null, p.currency));
    this.go.textContent = sale ? t("product.toSale") : offer ? t("product.toTeam") : "";
    this.go.classList.toggle("hidden", !sale && !offer);
  }
}

export class ShopView {
  constructor(shop, souk, els, ui) {
    this.shop = shop;
    this.souk = souk;
    this.els = els;
    this.ui = ui;
    this.saleCards = new Map();
    this.offerCards = new Map();
    this.productRows = new Map();
    this.flash = null; // {card, saleId}
    this.flashClosed = new Set();
    this.seenSales = new Set();
    this.tickerQueue = [];
    this.tickerBusy = false;
    shop.subscribe((what, item) => this.changed(what, item));
    onLang(() => this.changed("all"));
    setInterval(() => this.tick(), 250);
    souk.on("purchase", (ev) => { if (ev.ch === shop.ch) this.purchase(ev); });
  }

  toast(text, action) { this.ui.toast(text, action); }
  openOrders() { this.ui.openOrders(); }

  /** Redraw what a change touches (a sale tick redraws that sale, not the whole bag). */
  changed(what, item) {
    const all = !["sale", "order", "team", "offer", "pinned"].includes(what);
    if (what === "sale" && item) this.drawSale(item);
    if (all || what === "order") for (const s of this.shop.sales.values()) this.drawSale(s);
    if (all || what === "order" || what === "team" || what === "offer") {
      for (const o of this.shop.offers.values()) this.drawOffer(o);
    }
    if (what !== "order") { this.drawPinned(); this.drawProducts(); }
    if (all || what === "order") this.drawOrders();
    if (what === "sale" && item) this.pickFlash(item);
    if (what === "all") for (const s of this.shop.sales.values()) this.pickFlash(s);
    if (all) this.drawFlash();
  }

  refreshSale(id) { if (this.shop.sales.has(id)) this.drawSale(this.shop.sales.get(id)); }

  drawSale(s) {
    let card = this.saleCards.get(s.id);
    if (!card) {
      card = new SaleCard(this, s, "bag");
      this.saleCards.set(s.id, card);
    }
    const box = GONE.has(s.phase) ? this.els.gone : this.els.sales;
    if (card.el.parentNode !== box) box.prepend(card.el);
    card.update(s);
    if (this.flash && this.flash.saleId === s.id) this.flash.card.update(s);
    this.els.gone.parentElement.classList.toggle("hidden", !this.els.gone.children.length);
    this.els.sales.parentElement.classList.toggle("hidden", !this.els.sales.children.length);
  }

  /** Team buys: their cards (teambuy.js, with its stylesheet) load with the room's first one. */
  drawOffer(o) {
    if (!this.teamUi) {
      this.teamsLoading ||= import("/static/teambuy.js").then((m) => m.ready).then((m) => {
        this.teamUi = m;
        for (const offer of this.shop.offers.values()) this.drawOffer(offer);
      });
      return;
    }
    let card = this.offerCards.get(o.id);
    if (!card) {
      card = new this.teamUi.OfferCard(this, o);
      this.offerCards.set(o.id, card);
      this.els.teambuys.prepend(card.el);
    }
    card.update(o);
    this.els.teambuys.parentElement.classList.toggle("hidden", !this.offerCards.size);
  }

  /** Products: the pinned one first, then those on sale or in a team buy, then the rest. */
  drawProducts() {
    const shop = this.shop;
    const rank = (p) => (shop.pinned && shop.pinned.id === p.id ? 0 : shop.saleFor(p.id) ? 1 : shop.offerFor(p.id) ? 2 : 3);
    const items = [...shop.products.values()].sort((a, b) => rank(a) - rank(b) || (b.created_at || 0) - (a.created_at || 0));
    for (const [row, p] of keyed(this.els.products, this.productRows, items, (p) => new ProductRow(this, p))) row.update(p);
    this.els.bagCount.textContent = items.length ? String(items.length) : "";
  }

  /** The pinned product over the video: picture, the live sale's price, Buy (updated in place). */
  drawPinned() {
    const el = this.els.pinned, p = this.shop.pinned;
    el.classList.toggle("hidden", !p);
    el.dataset.product = p ? p.id : "";
    if (!p) return;
    const c = this.pin || (this.pin = {img: h("span"), title: h("b", {class: "title", testid: "pinned-title"}),
      tag: h("span", {class: "tag"}), price: h("span", {testid: "pinned-price"}),
      buy: h("button", {class: "buy", type: "button", testid: "pinned-buy", onclick: () => this.focusDeal(el.dataset.product)})});
    if (!el.children.length) fill(el, c.img, h("div", {class: "body"}, c.tag, c.title, c.price), c.buy);
    const full = this.shop.product(p.id) || p;
    const sale = this.shop.saleFor(p.id), offer = this.shop.offerFor(p.id);
    const live = sale && sale.phase === "live";
    picture(c, full);
    c.tag.textContent = t("product.explaining");
    c.title.textContent = full.title || t("product.untitled");
    const deal = live ? sale : offer;
    fill(c.price, priceTag(deal ? deal.price : full.price, deal ? full.price : null, (deal || full).currency, live ? "hot" : ""));
    c.buy.textContent = live ? t("pinned.buy") : offer ? t("pinned.team") : t("pinned.view");
  }

  /** Show the best way to buy a product: its live sale in the pop-up, else the bag. */
  focusDeal(productId) {
    const sale = this.shop.saleFor(productId);
    if (sale && sale.phase === "live") {
      this.flashClosed.delete(sale.id);
      this.showFlash(sale.id);
      return;
    }
    const offer = this.shop.offerFor(productId);
    const target = (sale && this.saleCards.get(sale.id)) || (offer && this.offerCards.get(offer.id)) || this.productRows.get(productId);
    this.ui.openBag(target ? target.el : null);
  }

  /** A sale that starts (or is live when the page opens) pops up once over the video. */
  pickFlash(s) {
    if (this.seenSales.has(s.id) && !(this.flash && this.flash.saleId === s.id)) return;
    if (s.phase === "live" || s.phase === "scheduled") {
      this.seenSales.add(s.id);
      if (!this.flashClosed.has(s.id) && !this.shop.ended) this.showFlash(s.id);
    } else if (this.flash && this.flash.saleId === s.id) {
      // Sold out or over: the pop-up says so, then folds away.
      clearTimeout(this.flashFold);
      this.flashFold = setTimeout(() => { if (this.flash && this.flash.saleId === s.id) this.hideFlash(); }, 4000);
    }
  }

  showFlash(saleId) {
    const s = this.shop.sales.get(saleId);
    if (!s) return;
    if (!this.flash || this.flash.saleId !== saleId) {
      const card = new SaleCard(this, s, "flash");
      const close = h("button", {class: "close", type: "button", testid: "flash-close", "aria-label": t("close"),
        onclick: () => { this.flashClosed.add(saleId); this.hideFlash(true); }}, "×");
      card.el.append(close);
      this.flash = {card, saleId};
      fill(this.els.flash, card.el);
    }
    this.flash.card.update(s);
    this.els.flash.classList.remove("hidden");
    this.els.flashChip.classList.add("hidden");
  }

  /** Hide the pop-up; `minimise` keeps a chip with the countdown to bring it back. */
  hideFlash(minimise = false) {
    const id = this.flash && this.flash.saleId;
    this.els.flash.classList.add("hidden");
    const s = id && this.shop.sales.get(id);
    this.els.flashChip.classList.toggle("hidden", !(minimise && s && s.phase === "live"));
    this.els.flashChip.onclick = () => { if (id) { this.flashClosed.delete(id); this.showFlash(id); } };
    if (!minimise) this.flash = null;
  }

  drawFlash() {
    if (this.shop.ended) { this.hideFlash(); return; }
    if (this.flash) {
      const s = this.shop.sales.get(this.flash.saleId);
      if (s) this.flash.card.update(s);
    }
  }

  tick() {
    const now = this.souk.serverNow();
    for (const [id, card] of this.saleCards) card.tick(this.shop.sales.get(id), now);
    if (this.flash) {
      const s = this.shop.sales.get(this.flash.saleId);
      if (s) {
        this.flash.card.tick(s, now);
        const chip = this.els.flashChip;
        if (!chip.classList.contains("hidden")) chip.textContent = `⚡ ${saleClock(s, now).text}`;
      }
    }
    for (const el of document.querySelectorAll("[data-expires]")) {
      if (el.dataset.expires) el.textContent = t("team.timeLeft", {t: clockText(Number(el.dataset.expires) - now)});
    }
  }

  drawOrders() {
    const orders = [...this.shop.orders.values()].sort((a, b) => (b.created_at || 0) - (a.created_at || 0));
    const box = this.els.orders;
    fill(box, orders.map((o) => {
      const p = this.shop.product(o.product) || {};
      return h("li", {class: "item", testid: "order", dataset: {order: o.id, status: o.status}},
        productImage(p, "thumb sm"),
        h("div", {class: "body"},
          h("b", {class: "title", testid: "order-title"}, p.title || t("order.item")),
          h("span", {class: "meta"}, `${t("order.qty", {n: o.qty})} · ${money(o.amount ?? o.price * o.qty, o.currency)}`)),
        h("span", {class: `status ${o.status}`, testid: "order-status"}, t(o.team || o.offer ? `order.team.${o.status}` : `order.${o.status}`)));
    }));
    this.els.ordersEmpty.classList.toggle("hidden", orders.length > 0);
    for (const el of this.els.orderCounts) el.textContent = orders.length ? String(orders.length) : "";
  }

  /** The share sheet (loaded when first needed: most viewers never open it). */
  async share(team) {
    (await import("/static/teamshare.js")).shareSheet(this, team);
  }

  async joinTeam(offerId, teamId, button) {
    if (button) button.disabled = true;
    try {
      const team = await this.souk.teamJoin(offerId, teamId);
      this.shop.myTeamIds.add(team.id);
      this.shop.upsertTeam(team);
      this.toast(team.status === "confirmed" ? t("team.done") : t("team.joined"));
      return team;
    } catch (err) {
      this.toast(explain(err));
      throw err;
    } finally {
      if (button) button.disabled = false;
    }
  }

  /** The sheet a shared team link opens. */
  async openJoinSheet(teamId) {
    (await import("/static/teamshare.js")).joinSheet(this, teamId);
  }

  /** Social proof: "小* just bought …", one at a time, a bounded queue. */
  purchase(ev) {
    const items = (ev.items || []).slice(0, 3);
    for (const it of items) this.tickerQueue.push(t("ticker.bought", {name: it.name || "*", title: it.product || t("order.item"), n: it.qty || 1}));
    const more = Number(ev.count || 0) - items.length;
    if (more > 0) this.tickerQueue.push(t("ticker.more", {n: more}));
    this.tickerQueue.splice(0, Math.max(0, this.tickerQueue.length - 6));
    if (!this.tickerBusy) this.nextTicker();
  }

  nextTicker() {
    const text = this.tickerQueue.shift();
    const el = this.els.ticker;
    if (!text) { this.tickerBusy = false; el.classList.remove("show"); return; }
    this.tickerBusy = true;
    fill(el, h("span", {class: "tick-item", testid: "ticker-item"}, "🛍 ", text));
    el.classList.add("show");
    setTimeout(() => this.nextTicker(), 2500);
  }
}
