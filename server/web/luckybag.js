// The viewer's lucky draws (福袋): a badge over the video with the countdown and what to do to
// enter; its sheet with the prize, the steps (say the keyword, stay long enough, be a group
// member), the Enter button and the entrants; then the result, and whether I won. Loaded only
// when the room has a draw, so the page stays light without one. Times are on the server clock.
import {byTestId, clockText, explain, fill, h, money} from "/static/dom.js";
import {extendCatalog, onLang, t} from "/static/i18n.js";

const FINAL = new Set(["done", "cancelled"]);
const SHOW_DONE_MS = 10 * 60 * 1000; // a result stays on the badge this long

/** Load the badge's stylesheet once (a <link>: the pages' CSP allows this origin's styles). */
function stylesheet() {
  if (document.querySelector('link[href="/static/luckybag.css"]')) return;
  document.head.append(h("link", {rel: "stylesheet", href: "/static/luckybag.css"}));
}

/** The badge with its strings and stylesheet (the page imports this module on demand). */
export async function luckyBag(souk, room, ui) {
  stylesheet();
  await extendCatalog("luckybag");
  return new LuckyBag(souk, room, ui);
}

export class LuckyBag {
  constructor(souk, room, ui) {
    this.souk = souk;
    this.room = room;
    this.ui = ui;
    this.ch = `room:${room}`;
    this.draws = new Map(); // id -> the latest view, with my `entered`, `won`, `watched_s`
    this.seenAt = new Map(); // id -> server time when `watched_s` was read
    this.entering = new Set();
    this.badge = h("button", {class: "lucky-badge hidden", type: "button", testid: "draw-badge",
      onclick: () => this.open()});
    byTestId("stage").append(this.badge);
    this.sheetOpen = null; // the draw id whose sheet is open
    souk.on("draw", (ev) => { if (ev.ch === this.ch) this.upsert(ev); });
    souk.on("draw_entered", (ev) => this.mark(ev.draw, {entered: true}));
    souk.on("draw_refused", (ev) => {
      this.ui.toast(this.refusal(ev));
      if (ev.draw) this.refresh();
    });
    souk.on("connection", (ev) => { if (ev.state === "open" && ev.reconnected) this.refresh(); });
    onLang(() => this.draw());
    setInterval(() => this.draw(), 500);
  }

  fromSnapshot(draws) {
    for (const d of draws || []) this.upsert(d, {quiet: true});
    this.refresh();
  }

  /** My state in each draw (entered, won, time watched) from the server. */
  async refresh() {
    try {
      const mine = await this.souk.draws({room: this.room});
      const now = this.souk.serverNow();
      for (const d of mine) {
        if (d.watched_s !== undefined) this.seenAt.set(d.id, now);
        this.upsert(d, {quiet: true});
      }
    } catch { /* offline, or a server without draws: the events keep the badge current */ }
  }

  upsert(ev, {quiet = false} = {}) {
    const before = this.draws.get(ev.id);
    const d = {...(before || {}), ...ev};
    if (d.phase === "done" && d.won === undefined && this.souk.user) {
      d.won = (d.winners || []).some((w) => w.user === this.souk.user.id);
    }
    this.draws.set(d.id, d);
    if (!quiet && before && before.phase !== "done" && d.phase === "done" && d.entered) {
      this.ui.toast(d.won ? t("draw.youWon") : t("draw.notThisTime"),
        d.won ? {label: t("draw.see"), onclick: () => this.open(d.id)} : undefined);
    }
    this.draw();
  }

  mark(id, fields) {
    const d = this.draws.get(id);
    if (d) this.upsert({...d, ...fields}, {quiet: true});
  }

  /** The draw the badge shows: the newest still running, else the newest recent result. */
  current() {
    const now = this.souk.serverNow();
    let best = null;
    for (const d of this.draws.values()) {
      if (d.phase === "cancelled") continue;
      const live = !FINAL.has(d.phase);
      const recent = d.phase === "done" && now - (d.closed_at || d.ends_at) < SHOW_DONE_MS;
      if (!live && !recent) continue;
      if (!best || (live && FINAL.has(best.phase)) || (live === !FINAL.has(best.phase) && d.ends_at > best.ends_at)) best = d;
    }
    return best;
  }

  watchedLeft(d) {
    const need = d.condition && d.condition.watch_s;
    if (!need) return 0;
    if (d.watched_s === undefined) return need;
    const since = this.seenAt.get(d.id) || this.souk.serverNow();
    const watched = d.watched_s + (this.souk.serverNow() - since) / 1000;
    return Math.max(0, Math.ceil(need - watched));
  }

  /** What to do to enter, in a few words (under the badge's countdown). */
  how(d) {
    const c = d.condition || {};
    if (d.entered) return t("draw.how.in");
    if (c.keyword) return t("draw.how.keyword", {k: c.keyword});
    const wait = this.watchedLeft(d);
    if (wait > 0) return t("draw.how.watch", {s: wait});
    return t("draw.how.tap");
  }

  refusal(err) {
    if (err.wait_s) return t("draw.stayMore", {s: err.wait_s});
    if (err.code === "ended") return t("draw.closed");
    if (err.code === "forbidden" && err.group) return t("draw.needGroup");
    return explain(err);
  }

  // ---- drawing ------------------------------------------------------------------------
  draw() {
    const d = this.current();
    this.badge.classList.toggle("hidden", !d);
    if (d) {
      const left = d.ends_at - this.souk.serverNow();
      const label = d.phase === "open" ? (left > 0 ? clockText(left) : t("draw.drawingShort"))
        : d.phase === "drawing" ? t("draw.drawingShort") : (d.won ? t("draw.wonShort") : t("draw.doneShort"));
      this.badge.dataset.phase = d.phase;
      this.badge.dataset.won = d.won ? "1" : "";
      this.badge.dataset.entered = d.entered ? "1" : "";
      const how = d.phase === "open" ? this.how(d) : "";
      fill(this.badge, bagIcon(), h("b", {}, t("draw.badge")), h("span", {class: "when", testid: "draw-countdown"}, label),
        how ? h("span", {class: "how", testid: "draw-how"}, how) : null);
      this.badge.setAttribute("aria-label", `${t("draw.badge")} ${label} ${how}`);
    }
    if (this.sheetOpen) this.drawSheet();
  }

  open(id) {
    const d = id ? this.draws.get(id) : this.current();
    if (!d) return;
    this.sheetOpen = d.id;
    this.body = h("div", {class: "lucky-sheet", testid: "draw-sheet"});
    this.ui.sheet("draw", t("draw.title"), this.body);
    this.drawSheet();
    const closed = () => { if (document.body.dataset.sheet !== "modal") { this.sheetOpen = null; obs.disconnect(); } };
    const obs = new MutationObserver(closed);
    obs.observe(document.body, {attributes: true, attributeFilter: ["data-sheet"]});
  }

  drawSheet() {
    const d = this.draws.get(this.sheetOpen);
    if (!d || !this.body) return;
    const now = this.souk.serverNow();
    const parts = [
      h("div", {class: "lucky-head"}, bagIcon(), h("div", {},
        h("b", {class: "lucky-title", testid: "draw-title"}, d.title),
        h("p", {class: "lucky-prize", testid: "draw-prize"}, prizeText(d.prize)))),
      h("div", {class: "lucky-figures"},
        h("span", {}, h("b", {testid: "draw-winners-count"}, String(d.winners_count)), t("draw.winners")),
        h("span", {}, h("b", {testid: "draw-entrants"}, String(d.entrants || 0)), t("draw.entrants")),
        h("span", {}, h("b", {testid: "draw-when"}, d.phase === "open" ? clockText(d.ends_at - now) : "—"),
          t(d.phase === "open" ? "draw.endsIn" : "draw.closedAt"))),
    ];
    if (d.phase === "open") parts.push(this.steps(d));
    else if (d.phase === "drawing") parts.push(h("p", {class: "lucky-state", testid: "draw-state"}, t("draw.drawing")));
    else if (d.phase === "done") parts.push(this.result(d));
    else parts.push(h("p", {class: "lucky-state", testid: "draw-state"}, t("draw.cancelled")));
    parts.push(h("p", {class: "meta lucky-fair", testid: "draw-fair"},
      t(d.phase === "done" ? "draw.fairDone" : "draw.fair"), " ",
      h("code", {}, `${String(d.commitment || "").slice(0, 8)}…`)));
    fill(this.body, parts);
  }

  steps(d) {
    const c = d.condition || {};
    const list = [];
    const wait = this.watchedLeft(d);
    if (c.keyword) {
      list.push(h("li", {testid: "draw-step-keyword", dataset: {done: d.entered ? "1" : ""}},
        t("draw.step.keyword", {k: c.keyword}),
        d.entered ? null : h("button", {class: "tiny", type: "button", testid: "draw-say",
          onclick: () => this.say(c.keyword)}, t("draw.say"))));
    }
    if (c.watch_s) {
      list.push(h("li", {testid: "draw-step-watch", dataset: {done: wait ? "" : "1"}},
        wait ? t("draw.step.watchLeft", {s: wait, total: c.watch_s}) : t("draw.step.watchDone", {total: c.watch_s})));
    }
    if (c.group) list.push(h("li", {testid: "draw-step-group"}, t("draw.step.group")));
    if (!list.length) list.push(h("li", {}, t("draw.step.anyone")));
    let action;
    if (d.entered) action = h("p", {class: "lucky-entered", testid: "draw-entered"}, t("draw.entered"));
    else if (c.keyword) action = h("p", {class: "meta", testid: "draw-hint"}, t("draw.keywordHint"));
    else {
      const busy = this.entering.has(d.id);
      action = h("button", {class: "buy wide", type: "button", testid: "draw-enter", disabled: busy || wait > 0,
        onclick: () => this.enter(d)}, busy ? t("draw.entering") : wait > 0 ? t("draw.stayMore", {s: wait}) : t("draw.enter"));
    }
    return h("div", {}, h("ol", {class: "lucky-steps"}, list), action);
  }

  result(d) {
    const winners = d.winners || [];
    const mine = d.won
      ? h("p", {class: "lucky-won", testid: "draw-result"}, t(d.prize && d.prize.product ? "draw.wonOrder" : "draw.wonCoupon"))
      : h("p", {class: "lucky-state", testid: "draw-result"}, d.entered ? t("draw.notThisTime") : t("draw.notEntered"));
    const action = d.won && d.prize && d.prize.product
      ? h("button", {class: "primary", type: "button", testid: "draw-orders", onclick: () => this.ui.openOrders()}, t("draw.myOrders"))
      : null;
    return h("div", {}, mine, action,
      h("h3", {}, t("draw.winnersList")),
      winners.length ? h("ul", {class: "plain lucky-winners", testid: "draw-winners"},
        winners.map((w) => h("li", {}, w.name, this.souk.user && w.user === this.souk.user.id ? h("span", {class: "tag"}, t("draw.me")) : null)))
        : h("p", {class: "meta"}, t("draw.nobody")));
  }

  async enter(d) {
    this.entering.add(d.id);
    this.drawSheet();
    try {
      const r = await this.souk.drawEnter(d.id);
      this.mark(d.id, {entered: true, entrants: Math.max(d.entrants || 0, r.entrants || 0)});
      this.ui.toast(t("draw.enteredToast"));
    } catch (err) {
      this.ui.toast(this.refusal(err));
      if (err.wait_s) this.refresh();
    } finally {
      this.entering.delete(d.id);
      this.drawSheet();
    }
  }

  async say(keyword) {
    try {
      await this.souk.chat(this.room, keyword);
    } catch (err) {
      this.ui.toast(explain(err));
    }
  }
}

function prizeText(p) {
  if (!p) return "";
  if (p.coupon && p.coupon.kind === "percent") {
    return t("draw.prize.percent", {off: p.coupon.value, zhe: (100 - p.coupon.value) / 10});
  }
  if (p.coupon) return t("draw.prize.coupon", {value: money(p.coupon.value)});
  return t("draw.prize.product", {title: p.title || t("product.untitled")});
}

function bagIcon() {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 32 32");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", "bag-icon");
  for (const [tag, attrs] of [
    ["path", {d: "M10 9c-3 3-6 8-6 13 0 5 5 7 12 7s12-2 12-7c0-5-3-10-6-13z", class: "body"}],
    ["path", {d: "M10 9l-2-5 4 2 4-3 4 3 4-2-2 5z", class: "knot"}],
    ["text", {x: "16", y: "23", "text-anchor": "middle", class: "fu"}],
  ]) {
    const el = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (tag === "text") el.textContent = "福";
    svg.append(el);
  }
  return svg;
}
