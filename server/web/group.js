// A community group: its notices (sales, team buys, coupons), the chat, the questions mirrored
// from the live room (a member answers by replying: the answer goes back to the room) and
// the members.
import {boot, fail} from "/static/boot.js";
import {ChatPanel} from "/static/chat.js";
import {avatar, byTestId, fill, h, money} from "/static/dom.js";
import {has, locale, onLang, t} from "/static/i18n.js";
import {QuestionList} from "/static/questions.js";
import {moderate, moderation} from "/static/staff.js";

function timeOfDay(ms) {
  return new Date(ms).toLocaleTimeString(locale(), {hour: "2-digit", minute: "2-digit"});
}

const STAFF = ["streamer", "moderator", "admin"];

async function main() {
  const room = new URLSearchParams(location.search).get("room") || "demo";
  const {souk, id: group, user} = await boot("member", "group", {room});
  const ch = `group:${group}`;
  let questions = null;
  const chat = new ChatPanel(byTestId("chat"), souk, {group}, {
    decorate: STAFF.includes(user.role) ? moderation : undefined,
    describeReply: (id) => (questions && questions.items.get(id) ? `“${questions.items.get(id).text}”` : t("chat.reply.message")),
    // A reply to an open mirrored question answers it (the server sends this group no
    // question event for its own answer: its members see the reply): show it answered here.
    onMessage: (m) => {
      const q = m.reply_to && questions && questions.items.get(m.reply_to);
      if (q && q.status === "open") {
        questions.upsert({id: q.id, status: "answered", answer: m.text,
          answered_by: {via: "group", user: m.user, name: m.name}});
      }
    },
  });
  if (STAFF.includes(user.role)) {
    const open = byTestId("mod-open");
    open.classList.remove("hidden");
    open.addEventListener("click", () => moderate(chat, null));
  }
  // Replying to a mirrored question answers it: the reply carries `reply_to`, shown as a badge.
  const badge = byTestId("chat-replying");
  const setReply = (q) => {
    chat.replyTo = q ? q.id : null;
    badge.classList.toggle("hidden", !q);
    badge.textContent = q ? `${t("chat.replying", {text: q.text})} ✕` : "";
    if (q) chat.input.focus();
  };
  badge.addEventListener("click", () => setReply(null));
  chat.onSent = () => setReply(null);
  questions = new QuestionList(byTestId("qa"), souk, ch, {
    origin: (q) => (q.origin.title ? t("q.fromRoomTitled", {title: q.origin.title}) : t("q.fromRoom")), actions: (list, q, li) => li.prepend(h("span", {class: "actions"},
    h("button", {class: "tiny", type: "button", testid: "reply", onclick: () => setReply(q)}, t("q.reply"))))});
  const notices = new Notices();

  // Members join the group (a no-op when already in); tokens that list the group may just enter.
  try { await souk.groupJoin(group); } catch { /* not a member role, or a full group: enter anyway */ }
  let info = {};
  const showInfo = () => {
    const title = info.title || info.topic || t("group.untitled");
    byTestId("title").textContent = title;
    document.title = `${title} · Souk`;
    const av = byTestId("group-avatar");
    av.textContent = [...title][0] || "G";
    byTestId("tier").textContent = info.tier ? t(`tier.${info.tier}`) : "";
    byTestId("tier").classList.toggle("hidden", !info.tier);
  };
  onLang(showInfo);
  const apply = (snap) => {
    info = snap.group || {title: snap.title};
    showInfo();
    byTestId("member-count").textContent = String(snap.members ?? info.members ?? 0);
    questions.render(snap.questions);
    chat.render(snap.chat);
    notices.render(snap.notices);
  };
  apply(await souk.join(undefined, {group}));
  souk.on("resync", (ev) => { if (ev.ch === ch && ev.snapshot) apply(ev.snapshot); });
  souk.on("notice", (ev) => { if (ev.ch === ch) notices.add(ev); });
  souk.on("member_joined", (ev) => { if (ev.ch === ch) loadMembers(); });
  souk.on("member_left", (ev) => { if (ev.ch === ch) loadMembers(); });

  let members = [];
  const drawMembers = () => fill(byTestId("members"), members.map((m) => h("li", {class: "member", testid: "member", dataset: {user: m.user}},
    avatar(m.name, {key: m.user, size: "sm"}), h("span", {class: "grow"}, m.name || t("chat.someone")),
    h("span", {class: "meta"}, t(`role.${m.role || "member"}`)))));
  onLang(drawMembers);
  async function loadMembers() {
    try {
      members = await souk.groupMembers(group);
      byTestId("member-count").textContent = String(members.length);
      drawMembers();
    } catch {
      fill(byTestId("members"), h("li", {class: "meta"}, t("members.unavailable")));
    }
  }
  await loadMembers();
  document.body.dataset.ready = "1"; // every control is wired (tests wait for this)
}

/** Sale, team-buy and coupon notices, newest first (the snapshot's, then live ones). */
class Notices {
  constructor() {
    this.items = [];
    onLang(() => this.draw());
  }

  render(list) {
    this.items = [...(list || [])];
    this.draw();
  }

  add(n) {
    this.items.push(n);
    this.draw();
  }

  draw() {
    const sorted = [...this.items].sort((a, b) => (b.ts || 0) - (a.ts || 0)).slice(0, 20);
    fill(byTestId("notices"), sorted.map((n) => h("li", {class: "notice", testid: "notice", dataset: {kind: n.kind || ""}},
      h("b", {}, has(`notice.${n.kind}`) ? t(`notice.${n.kind}`) : t("notice.info")), " ", noticeText(n),
      h("span", {class: "meta"}, ` · ${timeOfDay(n.ts || Date.now())}${n.ends_at ? ` · ${t("notice.until", {time: timeOfDay(n.ends_at)})}` : ""}`))));
    byTestId("notices-empty").classList.toggle("hidden", sorted.length > 0);
  }
}

/** In the page's language when the notice says what it is about (title, price), else as sent. */
function noticeText(n) {
  if (n.kind === "sale" && n.title) return t("notice.saleText", {title: n.title, price: money(n.price, n.currency)});
  if (n.kind === "teambuy" && n.title) return t("notice.teamText", {title: n.title, n: n.size || "?"});
  return n.text || "";
}

main().catch(fail);
