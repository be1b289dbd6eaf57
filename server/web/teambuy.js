// Team buys on the viewer page: an offer's card (price, size, my team, open teams to join) and
// each team's row with its members' faces (masked 小*). Loaded with its stylesheet when the room
// first shows a team buy (or a team link is followed): most rooms have none.
import {avatar, clockText, explain, fill, h, maskName, money} from "/static/dom.js";
import {extendCatalog, t} from "/static/i18n.js";
import {keyed, picture, priceTag, teamCount} from "/static/shop.js";

const css = h("link", {rel: "stylesheet", href: "/static/teambuy.css"});
const loaded = new Promise((resolve) => { css.onload = css.onerror = resolve; });
if (!document.querySelector('link[href="/static/teambuy.css"]')) document.head.append(css);

export class OfferCard {
  constructor(view, offer) {
    this.view = view;
    this.id = offer.id;
    this.img = h("span", {class: "img-slot"});
    this.title = h("b", {class: "title"});
    this.price = h("span", {class: "price-line"});
    this.size = h("span", {class: "badge team-badge"});
    this.teams = h("ul", {class: "plain", testid: "teams"});
    this.mine = h("div", {class: "my-team", testid: "team-result"});
    this.open = h("button", {class: "buy", type: "button", testid: "team-open", onclick: () => this.act(view.souk.teamOpen(this.id), true)});
    this.match = h("button", {class: "link", type: "button", testid: "team-match", onclick: () => this.act(view.souk.teamJoin(this.id))});
    this.result = h("div", {class: "result", testid: "team-error", "aria-live": "polite"});
    this.rows = new Map();
    this.el = h("article", {class: "offer-card", testid: "teambuy-card", dataset: {offer: offer.id}},
      this.img,
      h("div", {class: "body"},
        h("div", {class: "line"}, this.size, this.title),
        h("div", {class: "line"}, this.price),
        this.mine, this.teams,
        h("div", {class: "line act"}, this.match, this.open),
        this.result));
  }

  update(o) {
    const shop = this.view.shop;
    picture(this, o);
    this.title.textContent = o.title || t("product.untitled");
    this.size.textContent = t("team.size", {n: o.size});
    fill(this.price, priceTag(o.price, o.list_price, o.currency), h("span", {class: "meta"}, ` · ${t("team.window", {t: clockText(o.window_s * 1000)})}`));
    const mine = shop.myTeam(o.id);
    const busy = mine && mine.status === "open";
    this.open.textContent = t("team.open", {price: money(o.price, o.currency)});
    this.match.textContent = t("team.match");
    this.open.disabled = this.match.disabled = shop.ended || busy;
    this.el.classList.toggle("ended", shop.ended);
    // My team first (from the team, or after a reload from my order), then teams to join.
    const status = mine && t(`team.status.${mine.status}`);
    fill(this.mine, mine && h("span", {}, mine.members ? t("team.mine", {n: teamCount(mine), size: mine.size || o.size, status})
      : t("team.mineNoCount", {status})), mine && mine.status === "open" && h("button", {class: "tiny", type: "button",
      testid: "team-share", onclick: () => this.view.share(mine)}, t("team.invite")));
    Object.assign(this.mine.dataset, {status: mine ? mine.status : "", team: mine ? mine.id : ""});
    this.mine.classList.toggle("hidden", !mine);
    const open = [...shop.teams.values()].filter((tm) => tm.offer === o.id && tm.status === "open" && !shop.isMine(tm))
      .sort((a, b) => (b.count || 0) - (a.count || 0)).slice(0, 5);
    for (const [row, tm] of keyed(this.teams, this.rows, open, (tm) => new TeamRow(this.view, tm))) row.update(tm, o);
  }

  async act(promise, opened = false) {
    this.result.textContent = "";
    try {
      const team = await promise;
      if (team && team.id) {
        this.view.shop.myTeamIds.add(team.id);
        this.view.shop.upsertTeam(team);
        if (opened && team.status === "open") this.view.share(team);
        else if (team.status === "confirmed") this.view.toast(t("team.done"));
      }
    } catch (err) {
      this.result.textContent = explain(err);
      this.result.dataset.outcome = err.code;
    }
  }
}

class TeamRow {
  constructor(view, tm) {
    this.view = view;
    this.id = tm.id;
    this.faces = h("span", {class: "faces"});
    this.need = h("span", {class: "need"});
    this.left = h("span", {class: "left meta"});
    this.join = h("button", {class: "small primary", type: "button", testid: "team-join",
      onclick: () => this.view.joinTeam(this.offer, this.id, this.join).catch(() => {})}, t("team.join"));
    this.el = h("li", {class: "team-row", testid: "team", dataset: {team: tm.id}}, this.faces,
      h("span", {class: "grow"}, this.need, this.left), this.join);
  }

  update(tm, offer) {
    this.offer = offer.id;
    this.tm = tm;
    this.el.dataset.status = tm.status;
    fill(this.faces, memberFaces(tm, this.view.shop.me));
    const n = teamCount(tm);
    this.need.textContent = t("team.need", {n: Math.max(0, (tm.size || offer.size) - n)});
    this.join.textContent = t("team.join");
    this.join.disabled = this.view.shop.ended;
    this.left.dataset.expires = String(tm.expires_at || ""); // the view's tick keeps it counting
  }
}

export function memberFaces(tm, me) {
  const out = [];
  const members = tm.members || [];
  for (const m of members.slice(0, 5)) {
    const shown = m.user === me ? t("team.me") : maskName(m.name);
    out.push(h("span", {class: "face", testid: "team-member", title: shown}, avatar(shown, {key: m.user, size: "sm"}), h("small", {}, shown)));
  }
  const missing = Math.max(0, (tm.size || 0) - (tm.count ?? members.length));
  for (let i = 0; i < Math.min(missing, 3); i++) out.push(h("span", {class: "face empty"}, h("span", {class: "avatar sm"}, "?")));
  return out;
}

/** This module, once its stylesheet and strings are in (cards never show unstyled). */
export const ready = Promise.all([loaded, extendCatalog("teambuy")]).then(() => ({OfferCard, memberFaces}));
