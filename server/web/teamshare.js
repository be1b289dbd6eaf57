// Sharing a team buy: the invite sheet with the team's link (which never carries the sharer's
// token: a friend signs in as the shop's site provides, or gets a viewer token in demo mode)
// and the sheet that link opens — that team, with Join unless it is one's own. Loaded by the
// viewer page only when someone shares or follows a link.
import {explain, h, maskName, money, productImage} from "/static/dom.js";
import {t} from "/static/i18n.js";
import {priceTag, teamCount} from "/static/shop.js";
import {memberFaces, ready} from "/static/teambuy.js";

await ready; // the faces' stylesheet and the team strings

/** The link a shopper sends friends: the room and the team, nothing else. */
export function shareLink(view, team) {
  return `${location.origin}/live/${encodeURIComponent(view.shop.room)}?team=${encodeURIComponent(team.id)}`;
}

export function shareSheet(view, team) {
  const link = shareLink(view, team);
  const o = view.shop.offers.get(team.offer) || {};
  const text = t("share.text", {title: o.title || t("product.untitled"), price: money(o.price, o.currency)});
  const input = h("input", {class: "share-link", testid: "share-link", readonly: true, value: link});
  const copy = h("button", {class: "buy", type: "button", testid: "share-copy"}, t("share.copy"));
  copy.addEventListener("click", async () => {
    input.select();
    try {
      if (navigator.share) await navigator.share({title: document.title, text, url: link});
      else await navigator.clipboard.writeText(link);
      copy.textContent = t("share.copied");
    } catch {
      copy.textContent = t("share.selectHint");
    }
  });
  view.ui.sheet("share", t("share.title"), h("div", {class: "share"},
    h("p", {}, text), h("p", {class: "faces"}, memberFaces(team, view.shop.me)),
    h("div", {class: "line"}, input, copy)));
}

/** The sheet a shared link opens: that team, and Join (unless it is mine). */
export function joinSheet(view, teamId) {
  const tm = view.shop.teams.get(teamId);
  const o = tm && view.shop.offers.get(tm.offer);
  if (!tm || !o || tm.status !== "open") {
    view.ui.sheet("join", t("join.title"), h("div", {class: "join", testid: "join-sheet-body", dataset: {state: "gone"}},
      h("p", {}, tm && tm.status === "confirmed" ? t("join.full") : t("join.gone")),
      h("button", {class: "buy", type: "button", testid: "join-browse", onclick: () => view.ui.openBag()}, t("join.browse"))));
    return;
  }
  const mine = view.shop.isMine(tm);
  const leader = (tm.members || []).find((m) => m.user === tm.leader) || (tm.members || [])[0];
  const status = h("p", {class: "result", testid: "join-result"});
  const left = h("span", {class: "meta", dataset: {expires: String(tm.expires_at)}});
  const join = h("button", {class: "buy", type: "button", testid: "join-team"}, t("join.cta", {price: money(o.price, o.currency)}));
  join.addEventListener("click", async () => {
    try {
      const team = await view.joinTeam(o.id, tm.id, join);
      status.textContent = team.status === "confirmed" ? t("team.done") : t("team.joined");
      status.dataset.status = team.status;
      join.classList.add("hidden");
    } catch (err) {
      status.textContent = explain(err);
      status.dataset.status = err.code;
    }
  });
  view.ui.sheet("join", t("join.title"), h("div", {class: "join", testid: "join-sheet-body", dataset: {state: mine ? "mine" : "open"}},
    h("div", {class: "line"}, productImage(o, "thumb"), h("div", {class: "body"},
      h("b", {class: "title"}, o.title || t("product.untitled")),
      priceTag(o.price, o.list_price, o.currency),
      h("span", {class: "badge team-badge"}, t("team.size", {n: o.size})))),
    h("p", {}, mine ? t("join.yours") : t("join.invited", {name: leader ? maskName(leader.name) : t("chat.someone")})),
    h("p", {class: "faces"}, memberFaces(tm, view.shop.me)),
    h("p", {}, t("team.need", {n: Math.max(0, tm.size - teamCount(tm))}), " · ", left),
    mine ? h("button", {class: "buy", type: "button", testid: "join-share", onclick: () => shareSheet(view, tm)}, t("team.invite")) : join,
    status));
}
