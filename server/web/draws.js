// The studio's lucky draws (福袋): a form to start one (a product or a coupon as the prize, how
// many winners, how long, and what viewers must do: say a keyword, stay a while, or nothing), and
// each draw of the room with its countdown (server clock), entrants growing as they join, a
// cancel button while open, and the winners (masked) once drawn. Rows update in place from
// `draw` events.
import {clockText, explain, h, money} from "/static/dom.js";
import {onLang, t} from "/static/i18n.js";

/** Whole units typed by a person ("5" or "5.5") to integer cents, or NaN. */
function cents(text) {
  const s = String(text).trim();
  if (!/^\d+(\.\d{1,2})?$/.test(s)) return NaN;
  const [whole, frac = ""] = s.split(".");
  return Number(whole) * 100 + Number((frac + "00").slice(0, 2));
}

export class StudioDraws {
  constructor(souk, room, {form, list, empty, error, onStarted}) {
    this.souk = souk;
    this.room = room;
    this.form = form;
    this.list = list;
    this.empty = empty;
    this.error = error;
    this.onStarted = onStarted;
    this.draws = new Map();
    this.rows = new Map();
    const ch = `room:${room}`;
    souk.on("draw", (ev) => { if (ev.ch === ch) this.upsert(ev); });
    form.addEventListener("submit", (e) => { e.preventDefault(); this.start(); });
    for (const el of form.querySelectorAll("select")) el.addEventListener("change", () => this.showFields());
    this.showFields();
    onLang(() => { for (const d of this.draws.values()) this.draw(d); this.showFields(); });
    setInterval(() => { for (const d of this.draws.values()) if (d.phase === "open") this.draw(d); }, 500);
  }

  field(name) { return this.form.querySelector(`[data-testid="draw-${name}"]`); }

  /** Only the inputs the chosen prize and condition need are shown. */
  showFields() {
    const prize = this.field("prize-kind").value;
    const cond = this.field("condition").value;
    this.field("product").closest("label").classList.toggle("hidden", prize !== "product");
    this.field("coupon").closest("label").classList.toggle("hidden", prize !== "coupon");
    this.field("keyword").closest("label").classList.toggle("hidden", cond !== "keyword");
    this.field("watch").closest("label").classList.toggle("hidden", cond !== "watch");
  }

  render(draws) {
    for (const d of draws || []) this.upsert(d);
  }

  async load() {
    try { this.render(await this.souk.draws({room: this.room})); } catch { /* an older server */ }
  }

  async start() {
    const prizeKind = this.field("prize-kind").value;
    let prize;
    if (prizeKind === "product") {
      if (!this.field("product").value) return this.fail({message: t("draw.f.noProduct")});
      prize = {product: this.field("product").value};
    } else {
      const value = cents(this.field("coupon").value);
      if (!Number.isFinite(value) || value <= 0) return this.fail({message: t("f.priceHint")});
      prize = {coupon: {kind: "amount", value, title: t("draw.couponTitle", {value: money(value)})}};
    }
    const cond = this.field("condition").value;
    const condition = cond === "keyword" ? {keyword: this.field("keyword").value.trim()}
      : cond === "watch" ? {watch_s: Number(this.field("watch").value)} : {};
    try {
      const d = await this.souk.drawCreate({room: this.room}, {
        title: this.field("title").value.trim() || t("draw.defaultTitle"), prize,
        winners: Number(this.field("winners").value), durationS: Number(this.field("duration").value), condition});
      this.upsert(d);
      this.fail(null);
      if (this.onStarted) this.onStarted(d);
    } catch (err) { this.fail(err); }
  }

  fail(err) { this.error.textContent = err ? (err.code ? explain(err) : err.message) : ""; }

  async cancel(id) {
    try { this.upsert(await this.souk.drawCancel(id)); } catch (err) { this.fail(err); }
  }

  upsert(ev) {
    const d = {...(this.draws.get(ev.id) || {}), ...ev};
    this.draws.set(d.id, d);
    this.draw(d);
  }

  draw(d) {
    let row = this.rows.get(d.id);
    if (!row) {
      row = {
        title: h("b", {class: "title"}), prize: h("span", {class: "meta"}),
        phase: h("span", {class: "pill", testid: "draw-phase"}),
        when: h("span", {class: "countdown", testid: "draw-countdown"}),
        entrants: h("b", {class: "draw-count", testid: "draw-entrants"}),
        cancel: h("button", {class: "tiny", type: "button", testid: "draw-cancel", onclick: () => this.cancel(d.id)}),
        winners: h("p", {class: "meta", testid: "draw-winners"}),
      };
      row.el = h("div", {class: "live-draw", testid: "draw-card", dataset: {draw: d.id}},
        h("span", {class: "draw-icon", "aria-hidden": "true"}, "福"),
        h("div", {class: "body"}, row.title, h("span", {}, row.prize, " ", row.when)),
        h("div", {class: "line"}, row.phase, row.cancel),
        h("div", {class: "draw-joined"}, row.entrants, h("span", {class: "meta", i18n: "draw.joined"})),
        row.winners);
      this.rows.set(d.id, row);
      this.list.prepend(row.el);
    }
    row.el.dataset.phase = d.phase;
    row.title.textContent = d.title;
    const p = d.prize || {};
    row.prize.textContent = p.coupon ? t("draw.prizeCoupon", {value: money(p.coupon.value)})
      : t("draw.prizeProduct", {title: p.title || t("product.untitled"), n: d.winners_count});
    row.phase.textContent = t(`draw.phase.${d.phase}`);
    row.phase.dataset.state = d.phase === "open" ? "live" : "";
    const left = d.ends_at - this.souk.serverNow();
    row.when.textContent = d.phase === "open" ? t("draw.endsIn", {t: clockText(left)}) : "";
    row.entrants.textContent = String(d.entrants || 0);
    row.cancel.textContent = t("draw.cancel");
    row.cancel.classList.toggle("hidden", d.phase !== "open");
    const names = (d.winners || []).map((w) => w.name).join("、");
    row.winners.textContent = d.phase === "done"
      ? (names ? t("draw.wonBy", {names}) : t("draw.noEntrants")) : describe(d.condition);
    this.empty.classList.toggle("hidden", this.draws.size > 0);
  }
}

function describe(c) {
  if (c && c.keyword) return t("draw.cond.keyword", {k: c.keyword});
  if (c && c.watch_s) return t("draw.cond.watch", {s: c.watch_s});
  return t("draw.cond.none");
}
