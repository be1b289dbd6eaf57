// Flash-sale cards: price, a countdown computed from the server's clock (souk.serverNow), a
// stock bar, and either "buy" (viewers) or "cancel" (the studio). Cards update from `sale`
// events; the countdown ticks locally between them.
import {byTestId, clockText, explain, h, money} from "/static/dom.js";

const PHASE_TEXT = {scheduled: "starting soon", live: "live", sold_out: "sold out", ended: "ended", cancelled: "cancelled"};

export class SaleCards {
  constructor(root, souk, room, {mode = "viewer"} = {}) {
    this.root = root;
    this.souk = souk;
    this.room = room;
    this.mode = mode;
    this.sales = new Map();
    this.cards = new Map();
    souk.on("sale", (ev) => { if (ev.ch === `room:${room}`) this.upsert(ev); });
    this.timer = setInterval(() => this.tick(), 200);
  }

  render(sales) {
    for (const s of sales || []) this.upsert(s);
  }

  upsert(sale) {
    const merged = {...(this.sales.get(sale.id) || {}), ...sale};
    this.sales.set(sale.id, merged);
    let card = this.cards.get(sale.id);
    if (!card) {
      card = this.build(merged);
      this.cards.set(sale.id, card);
      this.root.prepend(card.el);
    }
    this.update(card, merged);
  }

  build(sale) {
    const c = {};
    c.title = h("b", {testid: "sale-title"});
    c.price = h("span", {class: "price", testid: "sale-price"});
    c.was = h("span", {class: "was"});
    c.phase = h("span", {class: "phase", testid: "sale-phase"});
    c.countdown = h("span", {class: "countdown", testid: "sale-countdown"});
    c.fill = h("div");
    c.stock = h("span", {class: "meta", testid: "sale-stock"});
    c.result = h("div", {testid: "buy-result"});
    c.limit = h("span", {class: "meta"});
    const actions = h("div", {class: "row"});
    if (this.mode === "viewer") {
      c.button = h("button", {class: "primary", testid: "buy", onclick: () => this.buy(sale.id, c)}, "Buy now");
      actions.append(c.button);
    } else {
      c.button = h("button", {class: "small", testid: "sale-cancel", onclick: () => this.cancel(sale.id, c)}, "cancel sale");
      actions.append(c.button);
    }
    c.el = h("div", {class: "sale", testid: "sale-card", dataset: {sale: sale.id}},
      h("div", {class: "row"}, c.title, c.phase, h("span", {style: "flex:1"}), c.countdown),
      h("div", {class: "product-card"}, c.price, c.was, c.limit),
      h("div", {class: "stockbar", testid: "sale-stockbar"}, c.fill), c.stock, actions, c.result);
    return c;
  }

  update(c, s) {
    c.title.textContent = s.title || s.product || "Flash sale";
    c.price.textContent = money(s.price, s.currency);
    c.was.textContent = s.list_price && s.list_price > s.price ? money(s.list_price, s.currency) : "";
    c.limit.textContent = s.per_user_limit ? `limit ${s.per_user_limit} per person` : "";
    c.phase.textContent = PHASE_TEXT[s.phase] || s.phase || "";
    c.el.className = `sale ${s.phase}`;
    c.el.dataset.phase = s.phase;
    const stock = Number(s.stock || 0), left = Number(s.stock_left ?? stock);
    c.fill.style.width = stock ? `${(100 * left) / stock}%` : "0%";
    c.stock.textContent = `${left} / ${stock} left`;
    c.stock.dataset.left = String(left);
    if (this.mode === "viewer") c.button.disabled = s.phase !== "live" || left <= 0;
    else c.button.disabled = s.phase === "ended" || s.phase === "cancelled";
    this.tickOne(c, s);
  }

  tick() {
    for (const [id, c] of this.cards) this.tickOne(c, this.sales.get(id));
  }

  tickOne(c, s) {
    const now = this.souk.serverNow();
    let text = "";
    if (s.phase === "scheduled" && s.starts_at) text = `starts in ${clockText(s.starts_at - now)}`;
    else if ((s.phase === "live" || s.phase === "sold_out") && s.ends_at) text = clockText(s.ends_at - now);
    c.countdown.textContent = text;
    c.countdown.dataset.msLeft = s.ends_at ? String(Math.max(0, s.ends_at - now)) : "";
  }

  async buy(saleId, c) {
    c.button.disabled = true;
    try {
      const order = await this.souk.buy(saleId, 1);
      c.result.className = "okmsg";
      c.result.dataset.outcome = "ordered";
      c.result.textContent = `Ordered ✓ (order ${order.id})`;
    } catch (err) {
      c.result.className = "error";
      c.result.dataset.outcome = err.code;
      c.result.textContent = explain(err);
    } finally {
      const s = this.sales.get(saleId);
      c.button.disabled = !s || s.phase !== "live";
    }
  }

  async cancel(saleId, c) {
    try { await this.souk.saleCancel(this.room, saleId); } catch (err) { c.result.textContent = explain(err); }
  }
}

// Team-buy (拼团) offers: team price, progress of open teams, open a team or join one.
export class TeamBuyCards {
  constructor(root, souk, room, {mode = "viewer"} = {}) {
    this.root = root;
    this.souk = souk;
    this.room = room;
    this.mode = mode;
    this.offers = new Map();
    this.teams = new Map(); // team id -> team
    souk.on("teambuy", (ev) => { if (ev.ch === `room:${room}`) this.upsertOffer(ev); });
    souk.on("team", (ev) => { if (ev.ch === `room:${room}`) this.upsertTeam(ev); });
    // Only the time-left labels tick: redrawing the cards every second could swallow a click.
    this.timer = setInterval(() => this.tick(), 1000);
  }

  tick() {
    const now = this.souk.serverNow();
    for (const el of this.root.querySelectorAll("[data-expires]")) {
      el.textContent = `${clockText(Number(el.dataset.expires) - now)} left`;
    }
  }

  render(offers) {
    for (const o of offers || []) this.upsertOffer(o);
  }

  upsertOffer(o) {
    this.offers.set(o.id, {...(this.offers.get(o.id) || {}), ...o});
    for (const t of o.teams || []) this.teams.set(t.id, t);
    this.draw();
  }

  upsertTeam(t) {
    this.teams.set(t.id, {...(this.teams.get(t.id) || {}), ...t});
    this.draw();
  }

  draw() {
    const now = this.souk.serverNow();
    const cards = [...this.offers.values()].map((o) => {
      const teams = [...this.teams.values()].filter((t) => t.offer === o.id && (t.status === "open" || t.status === "confirmed"));
      const mine = this.teams.get(this.myTeam.get(o.id));
      const text = mine
        ? `Your team: ${mine.count ?? (mine.members || []).length}/${mine.size} — ${mine.status}`
        : this.results.get(o.id) || "";
      const result = h("div", {testid: "team-result", dataset: {status: mine ? mine.status : ""}}, text);
      return h("div", {class: "sale", testid: "teambuy-card", dataset: {offer: o.id}},
        h("div", {class: "row"}, h("b", {}, o.title || o.product), h("span", {class: "price"}, money(o.price, o.currency)),
          h("span", {class: "meta"}, `team of ${o.size} · ${o.window_s}s to fill`)),
        h("ul", {class: "list"}, teams.map((t) => h("li", {testid: "team", dataset: {team: t.id, status: t.status}},
          h("span", {}, `${t.count ?? (t.members || []).length} / ${t.size} `),
          h("div", {class: "stockbar"}, h("div", {style: `width:${(100 * (t.count ?? (t.members || []).length)) / t.size}%`})),
          t.status === "open"
            ? h("span", {class: "meta", dataset: {expires: String(t.expires_at)}}, `${clockText(t.expires_at - now)} left`)
            : h("span", {class: "meta"}, t.status),
          this.mode === "viewer" && t.status === "open"
            ? h("button", {class: "small", testid: "team-join", onclick: () => this.act(o.id, this.souk.teamJoin(o.id, t.id))}, "join")
            : null))),
        this.mode === "viewer"
          ? h("div", {class: "row"},
            h("button", {class: "primary", testid: "team-open", onclick: () => this.act(o.id, this.souk.teamOpen(o.id))}, "Open a team"),
            h("button", {testid: "team-match", onclick: () => this.act(o.id, this.souk.teamJoin(o.id))}, "Join any team"))
          : null,
        result);
    });
    this.root.replaceChildren(...cards);
  }

  get results() {
    if (!this._results) this._results = new Map(); // offer id -> last error text
    return this._results;
  }

  get myTeam() {
    if (!this._myTeam) this._myTeam = new Map(); // offer id -> the team this user is in
    return this._myTeam;
  }

  async act(offerId, promise) {
    try {
      const team = await promise;
      if (team && team.id) {
        this.myTeam.set(offerId, team.id);
        this.results.delete(offerId);
        this.upsertTeam(team);
      }
    } catch (err) {
      this.results.set(offerId, explain(err));
    }
    this.draw();
  }
}
