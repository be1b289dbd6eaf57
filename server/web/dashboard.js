// The merchant's numbers: plain fetch of the read-only API and SVG charts built with the DOM
// (no library, no CDN). Every figure carries data-metric="<name>" and data-value (the exact
// number) so a test or a merchant's script can read what is shown. Sales, team buys and rooms
// are labelled with their titles (from the room's snapshot), never their ids.
import {byTestId, h, money} from "/static/dom.js";
import {has, langToggle, loadCatalog, onLang, t} from "/static/i18n.js";

const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const q = new URLSearchParams(location.search);
let token = q.get("token");
let last = null; // the last numbers, redrawn on a language switch
let wantedGroup = q.get("group") ?? "demo-core"; // until the shop's groups are known

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

async function getToken() {
  if (token) return token;
  const r = await fetch(`/api/demo/token?role=admin&room=${encodeURIComponent($("room").value)}`);
  if (!r.ok) throw new Error(t("err.noToken"));
  token = (await r.json()).token;
  return token;
}

async function api(path) {
  const r = await fetch(`/api/${path}`, {headers: {Authorization: `Bearer ${await getToken()}`}});
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    const err = new Error(body.error === "forbidden" ? t("err.forbiddenNumbers") : body.error === "not_found" ? t("err.noSuch") : t("err.generic"));
    err.status = r.status;
    throw err;
  }
  return r.json();
}

/** The rooms the token admits (its `rooms` claim): asking for others would only be refused. */
function admits(room, token) {
  try {
    const claims = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return (claims.rooms || []).includes("*") || (claims.rooms || []).includes(room);
  } catch {
    return false;
  }
}

/** A room's snapshot (for its title and its sales' and offers' titles), or {} if not allowed. */
async function roomInfo(room) {
  if (!admits(room, await getToken())) return {};
  try { return await api(`rooms/${encodeURIComponent(room)}`); } catch { return {}; }
}

/** A merchant's action ({kind, detail}) in the page's language: "Sale notice: Oolong". */
function actionText(a) {
  if (typeof a === "string") return a;
  return t(has(`action.${a.kind}`) ? `action.${a.kind}` : "action.other", {detail: a.detail || ""});
}

/** The group picker: the shop's groups by their names (never their ids), the chosen one kept. */
function groupPicker(groups) {
  const sel = $("group"), chosen = sel.value || wantedGroup;
  const known = new Map(groups.map((g) => [g.id, g]));
  const label = (g) => g.title || t("pick.groupTopic", {topic: g.topic || "", tier: t(`tier.${g.tier}`), n: g.members});
  const options = [h("option", {value: ""}, t("pick.noGroup"))];
  for (const g of groups) options.push(h("option", {value: g.id}, label(g)));
  if (chosen && !known.has(chosen)) options.push(h("option", {value: chosen}, t("pick.otherGroup")));
  sel.replaceChildren(...options);
  sel.value = chosen;
}

const pct = (x) => `${(Number(x || 0) * 100).toFixed(1)}%`;

function kpis(el, items) {
  el.replaceChildren(...items.map(([label, shown, raw, name]) => h("div", {class: "kpi"},
    h("b", {dataset: {metric: name, value: raw ?? ""}}, String(shown)), h("span", {}, t(label)))));
}

function bars(el, rows, {label, value, fmt = String, alt = false}) {
  if (!rows.length) { el.replaceChildren(h("p", {class: "meta"}, t("chart.empty"))); return; }
  const w = 600, rowH = 34, pad = 210, max = Math.max(1, ...rows.map(value));
  const chart = svg("svg", {class: "chart", viewBox: `0 0 ${w} ${rows.length * rowH + 4}`, role: "img"});
  rows.forEach((r, i) => {
    const bw = Math.max(1, ((w - pad - 110) * value(r)) / max), y = i * rowH + 2;
    const name = label(r);
    chart.append(
      svg("text", {class: "label", x: 0, y: y + 22}, name.length > 16 ? `${name.slice(0, 15)}…` : name),
      svg("rect", {class: alt ? "bar alt" : "bar", x: pad, y: y + 5, width: bw, height: rowH - 10, rx: 4}),
      svg("text", {class: "value", x: pad + bw + 6, y: y + 22}, fmt(value(r))));
  });
  el.replaceChildren(chart);
}

function weeks(el, rows) {
  if (!rows.length) { el.replaceChildren(h("p", {class: "meta"}, t("chart.noWeeks"))); return; }
  const w = 600, ht = 240, left = 30, bottom = 30, slot = (w - left) / rows.length;
  const maxCount = Math.max(1, ...rows.map((r) => Math.max(r.joins, r.exits)));
  const maxMsg = Math.max(1, ...rows.map((r) => r.messages));
  const y = (v, max) => ht - bottom - ((ht - bottom - 28) * v) / max;
  const chart = svg("svg", {class: "chart", viewBox: `0 0 ${w} ${ht}`, role: "img"},
    svg("line", {class: "axis", x1: left, y1: ht - bottom, x2: w, y2: ht - bottom}));
  rows.forEach((r, i) => {
    const x = left + i * slot, bw = slot / 3;
    chart.append(
      svg("rect", {class: "joins", x: x + 4, y: y(r.joins, maxCount), width: bw, height: ht - bottom - y(r.joins, maxCount)},
        svg("title", {}, `${t("chart.joins")} ${r.joins}`)),
      svg("rect", {class: "exits", x: x + 4 + bw, y: y(r.exits, maxCount), width: bw, height: ht - bottom - y(r.exits, maxCount)},
        svg("title", {}, `${t("chart.exits")} ${r.exits}`)),
      svg("text", {class: "legend", x: x + 4, y: ht - 8}, new Date(r.week_start).toLocaleDateString(undefined, {month: "numeric", day: "numeric"})));
    if (r.actions.length) chart.append(svg("circle", {class: "dot", cx: x + slot / 2, cy: ht - bottom - 6, r: 6}, svg("title", {}, r.actions.map(actionText).join("; "))));
  });
  chart.append(svg("polyline", {class: "messages", points: rows.map((r, i) => `${left + i * slot + slot / 2},${y(r.messages, maxMsg)}`).join(" ")}),
    svg("text", {class: "legend", x: left, y: 16}, svg("tspan", {class: "joins-t"}, `■ ${t("chart.joins")}  `),
      svg("tspan", {class: "exits-t"}, `■ ${t("chart.exits")}  `), svg("tspan", {class: "messages-t"}, `— ${t("chart.messages")}  ● ${t("chart.action")}`)));
  el.replaceChildren(chart);
}

async function load() {
  $("error").textContent = "";
  const room = $("room").value.trim(), group = $("group").value || wantedGroup;
  try {
    const [r, s, info, d] = await Promise.all([api(`rooms/${encodeURIComponent(room)}/metrics`), api("shop/metrics"),
      roomInfo(room), api(`rooms/${encodeURIComponent(room)}/draws`).catch(() => null)]);
    let g = null;
    if (group) g = await api(`groups/${encodeURIComponent(group)}/metrics`);
    // Titles of the shop's other rooms (a few), for the revenue-per-room chart.
    const titles = new Map([[room, info.title]]);
    await Promise.all(s.rooms.slice(0, 8).filter((x) => !titles.has(x.room)).map(async (x) => titles.set(x.room, (await roomInfo(x.room)).title)));
    last = {room, group, r, s, g, info, titles, d};
    draw();
    $("updated").textContent = t("updated", {time: new Date().toLocaleTimeString()});
    document.body.dataset.loaded = "1";
  } catch (e) {
    $("error").textContent = e.message;
    document.body.dataset.loaded = "error";
  }
}

function draw() {
  if (!last) return;
  const {room, r, s, g, info, titles, d} = last;
  groupPicker(s.groups || []);
  $("room-name").textContent = info.title || room;
  const c = (info.pinned && info.pinned.currency) || "CNY";
  kpis($("room-kpis"), [
    ["k.viewers", r.viewers.unique, r.viewers.unique, "viewers"],
    ["k.peak", r.viewers.peak, r.viewers.peak, "peak_viewers"],
    ["k.avgViewers", r.viewers.average, r.viewers.average, "avg_viewers"],
    ["k.watchMin", (r.watch_time_s / 60).toFixed(1), r.watch_time_s, "watch_time_s"],
    ["k.messages", r.messages, r.messages, "messages"],
    ["k.likes", r.likes, r.likes, "likes"],
    ["k.questions", r.questions.asked, r.questions.asked, "questions"],
    ["k.answerP50", r.questions.answer_p50_s ?? "–", r.questions.answer_p50_s ?? "", "answer_p50_s"],
    ["k.answerP90", r.questions.answer_p90_s ?? "–", r.questions.answer_p90_s ?? "", "answer_p90_s"],
    ["k.answered5", pct(r.questions.answered_within_5min), r.questions.answered_within_5min, "answered_within_5min"],
    ["k.interaction", pct(r.interaction_rate), r.interaction_rate, "interaction_rate"],
    ["k.conversion", pct(r.conversion_rate), r.conversion_rate, "conversion_rate"],
    ["k.orders", r.orders, r.orders, "orders"],
    ["k.units", r.units, r.units, "units"],
    ["k.revenue", money(r.revenue, c), r.revenue, "revenue"],
  ]);
  const saleTitle = new Map((info.sales || []).map((x) => [x.id, x.title]));
  const offerTitle = new Map((info.teambuys || []).map((x) => [x.id, x.title]));
  bars($("sales-chart"), [
    ...r.sales.map((x, i) => ({name: x.title || saleTitle.get(x.sale) || t("chart.saleN", {n: i + 1}), ...x})),
    ...r.teambuys.map((x, i) => ({name: `${t("chart.team")} · ${x.title || offerTitle.get(x.teambuy) || t("chart.teamN", {n: i + 1})}`, ...x})),
  ], {label: (x) => x.name, value: (x) => x.revenue, fmt: (v) => money(v, c)});
  // Lucky draws: how many, who entered, and the viewers still there when each was drawn.
  $("draws-part").classList.toggle("hidden", !d);
  if (d) {
    kpis($("draw-kpis"), [
      ["k.draws", d.draws, d.draws, "draws"],
      ["k.drawEntrants", d.entrants, d.entrants, "draw_entrants"],
      ["k.drawStayed", d.stayed, d.stayed, "draw_stayed"],
      ["k.perDraw", d.draws ? Math.round(d.entrants / d.draws) : "–", d.draws ? d.entrants / d.draws : "", "entrants_per_draw"],
    ]);
    bars($("draws-chart"), d.list.filter((x) => x.phase === "done").slice(0, 8).map((x) => ({name: x.title, ...x})),
      {label: (x) => x.name, value: (x) => x.entrants, alt: true});
  }
  kpis($("shop-kpis"), [
    ["k.orders", s.orders, s.orders, "shop_orders"], ["k.revenue", money(s.revenue, c), s.revenue, "shop_revenue"],
    ["k.couponsIssued", s.coupons.issued, s.coupons.issued, "coupons_issued"],
    ["k.couponsUsed", s.coupons.redeemed, s.coupons.redeemed, "coupons_redeemed"],
    ["k.invited", s.invited_members, s.invited_members, "invited_members"],
  ]);
  bars($("rooms-chart"), s.rooms.map((x, i) => ({...x, name: titles.get(x.room) || t("chart.roomN", {n: i + 1})})),
    {label: (x) => x.name, value: (x) => x.revenue, fmt: (v) => money(v, c), alt: true});
  $("group-section").classList.toggle("hidden", !g);
  if (!g) return;
  const named = (s.groups || []).find((x) => x.id === last.group) || {};
  $("group-name").textContent = g.title || named.title || named.topic || "";
  kpis($("group-kpis"), [
    ["k.members", g.members, g.members, "group_members"], ["k.active7", g.active_members_7d, g.active_members_7d, "group_active"],
    ["k.groupMessages", g.messages, g.messages, "group_messages"], ["k.interaction", pct(g.interaction_rate), g.interaction_rate, "group_interaction_rate"],
    ["k.conversion", pct(g.conversion_rate), g.conversion_rate, "group_conversion_rate"],
    ["k.repurchase", pct(g.repurchase_rate), g.repurchase_rate, "group_repurchase_rate"],
    ["k.clv", money(g.clv, c), g.clv, "group_clv"], ["k.joins", g.joins, g.joins, "group_joins"],
    ["k.exits", g.exits, g.exits, "group_exits"], ["k.exitRate", pct(g.exit_rate), g.exit_rate, "group_exit_rate"],
  ]);
  weeks($("weeks-chart"), g.weeks);
  $("actions").replaceChildren(...g.weeks.filter((w) => w.actions.length).map((w) => h("li", {},
    t("weeks.action", {week: new Date(w.week_start).toISOString().slice(0, 10), actions: w.actions.map(actionText).join("; "),
      msgs: `${w.messages_change >= 0 ? "+" : ""}${w.messages_change ?? 0}`, exits: `${w.exits_change >= 0 ? "+" : ""}${w.exits_change ?? 0}`}))));
}

await loadCatalog("dashboard");
langToggle(byTestId("lang"));
onLang(draw);
if (q.get("room")) $("room").value = q.get("room");
byTestId("pickers").addEventListener("submit", (e) => { e.preventDefault(); load(); });
$("group").addEventListener("change", () => { wantedGroup = $("group").value; load(); });
load();
setInterval(load, 15000);
