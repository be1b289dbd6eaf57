// The studio's live sales: each flash sale with its price, phase, countdown (server clock),
// stock bar, units sold and a cancel button; each team-buy offer with its open teams. Rows
// update in place from `sale`, `teambuy` and `team` events (a cancel button never moves
// under the mouse).
import {clockText, fill, h, money, productImage} from "/static/dom.js";
import {onLang, t} from "/static/i18n.js";

const GONE = new Set(["ended", "sold_out", "cancelled"]);

export class LiveSales {
  constructor(souk, room, {sales, teambuys, empty, onError}) {
    this.souk = souk;
    this.room = room;
    this.box = sales;
    this.teamBox = teambuys;
    this.empty = empty;
    this.onError = onError;
    this.sales = new Map();
    this.rows = new Map();
    this.offers = new Map();
    this.teams = new Map();
    const ch = `room:${room}`;
    souk.on("sale", (ev) => { if (ev.ch === ch) this.upsert(ev); });
    souk.on("teambuy", (ev) => { if (ev.ch === ch) this.upsertOffer(ev); });
    souk.on("team", (ev) => { if (ev.ch === ch) { this.teams.set(ev.id, ev); this.drawOffers(); } });
    onLang(() => { for (const s of this.sales.values()) this.draw(s); this.drawOffers(); });
    setInterval(() => this.tick(), 500);
  }

  render(sales, offers) {
    for (const s of sales || []) this.upsert(s);
    for (const o of offers || []) this.upsertOffer(o);
  }

  upsert(s) {
    const merged = {...(this.sales.get(s.id) || {}), ...s};
    this.sales.set(s.id, merged);
    this.draw(merged);
  }

  draw(s) {
    let row = this.rows.get(s.id);
    if (!row) {
      row = {
        img: h("span", {}), title: h("b", {class: "title"}), price: h("span", {class: "meta"}),
        phase: h("span", {class: "pill", testid: "sale-phase"}), countdown: h("span", {class: "countdown", testid: "sale-countdown"}),
        fill: h("i"), stock: h("span", {class: "meta", testid: "sale-stock"}),
        cancel: h("button", {class: "tiny", type: "button", testid: "sale-cancel", onclick: () => this.cancel(s.id)}),
      };
      row.el = h("div", {class: "live-sale", testid: "sale-card", dataset: {sale: s.id}},
        row.img, h("div", {class: "body"}, row.title, h("span", {}, row.price, " ", row.countdown)),
        h("div", {class: "line"}, row.phase, row.cancel),
        h("span", {class: "stockbar"}, row.fill), row.stock);
      this.rows.set(s.id, row);
      this.box.prepend(row.el);
      fill(row.img, productImage(s, "thumb sm"));
    }
    const stock = Number(s.stock || 0), left = Number(s.stock_left ?? stock);
    row.el.dataset.phase = s.phase;
    row.title.textContent = s.title || t("product.untitled");
    row.price.textContent = `${money(s.price, s.currency)} · ${s.per_user_limit ? t("sale.perPerson", {n: s.per_user_limit}) : ""}`;
    row.phase.textContent = t(`phase.${s.phase}`);
    row.phase.dataset.state = s.phase === "live" ? "live" : "";
    row.fill.style.width = stock ? `${(100 * (stock - left)) / stock}%` : "0%";
    row.stock.textContent = t("sale.sold", {sold: stock - left, stock, left});
    row.stock.dataset.left = String(left);
    row.cancel.textContent = t("sale.cancel");
    row.cancel.classList.toggle("hidden", GONE.has(s.phase));
    if (GONE.has(s.phase) && row.el.parentNode === this.box) this.box.append(row.el); // finished ones sink
    this.tickOne(row, s, this.souk.serverNow());
    this.empty.classList.toggle("hidden", this.rows.size + this.offers.size > 0);
  }

  tick() {
    const now = this.souk.serverNow();
    for (const [id, row] of this.rows) this.tickOne(row, this.sales.get(id), now);
  }

  tickOne(row, s, now) {
    let text = "";
    if (s.phase === "scheduled" && s.starts_at) text = t("sale.startsIn", {t: clockText(s.starts_at - now)});
    else if (s.phase === "live" && s.ends_at) text = clockText(s.ends_at - now);
    row.countdown.textContent = text;
    row.countdown.dataset.msLeft = s.phase === "live" && s.ends_at ? String(Math.max(0, s.ends_at - now)) : "";
  }

  async cancel(id) {
    try { await this.souk.saleCancel(this.room, id); } catch (err) { this.onError(err); }
  }

  upsertOffer(o) {
    this.offers.set(o.id, {...(this.offers.get(o.id) || {}), ...o});
    for (const tm of o.teams || []) this.teams.set(tm.id, tm);
    this.drawOffers();
  }

  drawOffers() {
    fill(this.teamBox, [...this.offers.values()].reverse().map((o) => {
      const teams = [...this.teams.values()].filter((tm) => tm.offer === o.id);
      const open = teams.filter((tm) => tm.status === "open").length;
      const done = teams.filter((tm) => tm.status === "confirmed").length;
      return h("div", {class: "live-sale", testid: "teambuy-card", dataset: {offer: o.id}},
        productImage(o, "thumb sm"),
        h("div", {class: "body"}, h("b", {class: "title"}, o.title || t("product.untitled")),
          h("span", {class: "meta"}, `${money(o.price, o.currency)} · ${t("team.size", {n: o.size})}`)),
        h("span", {class: "pill team-badge-pill"}, t("team.counts", {open, done})));
    }));
    this.empty.classList.toggle("hidden", this.rows.size + this.offers.size > 0);
  }
}

