// A community group: chat, questions mirrored from the live room (answered by replying), sale
// notices, the member list.
import {boot, fail} from "/static/boot.js";
import {ChatPanel} from "/static/chat.js";
import {byTestId, h, timeOfDay} from "/static/dom.js";
import {QuestionList} from "/static/questions.js";

async function main() {
  const room = new URLSearchParams(location.search).get("room") || "demo";
  const {souk, id: group, user} = await boot("member", {room});
  const ch = `group:${group}`;
  let questions = null;
  const chat = new ChatPanel(byTestId("chat"), souk, {group}, {
    moderation: ["streamer", "moderator", "admin"].includes(user.role),
    describeReply: (id) => (questions && questions.items.get(id) ? `“${questions.items.get(id).text}”` : id),
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
  questions = new QuestionList(byTestId("qa"), souk, ch, {mode: "group",
    onReply: (q) => chat.setReply(q.id, q.text)});

  // Members join the group (a no-op when already in); tokens that list the group may just enter.
  try { await souk.groupJoin(group); } catch { /* not a member role, or no such op yet */ }
  const snap = await souk.join(undefined, {group});
  byTestId("title").textContent = (snap.group && (snap.group.title || snap.group.topic)) || snap.title || `Group ${group}`;
  byTestId("member-count").textContent = snap.members ?? 0;
  questions.render(snap.questions);
  chat.render(snap.chat);
  for (const n of snap.notices || []) addNotice(n);

  souk.on("resync", (ev) => {
    if (ev.ch !== ch || !ev.snapshot) return;
    questions.render(ev.snapshot.questions);
    chat.render(ev.snapshot.chat);
  });
  souk.on("notice", (ev) => { if (ev.ch === ch) addNotice(ev); });
  souk.on("member_joined", (ev) => { if (ev.ch === ch) { byTestId("member-count").textContent = ev.members; loadMembers(); } });
  souk.on("member_left", (ev) => { if (ev.ch === ch) { byTestId("member-count").textContent = ev.members; loadMembers(); } });

  async function loadMembers() {
    try {
      const members = await souk.groupMembers(group);
      byTestId("members").replaceChildren(...members.map((m) => h("li", {testid: "member", dataset: {user: m.user}},
        h("span", {class: "who"}, m.name || m.user), h("span", {class: "meta"}, m.role || ""))));
      byTestId("member-count").textContent = members.length;
    } catch (err) {
      byTestId("members").replaceChildren(h("li", {class: "meta"}, "member list unavailable"));
    }
  }
  loadMembers();
  document.body.dataset.ready = "1"; // every control is wired (tests wait for this)
}

function addNotice(n) {
  const ends = n.ends_at ? ` · until ${timeOfDay(n.ends_at)}` : "";
  byTestId("notices").prepend(h("li", {class: "notice", testid: "notice", dataset: {kind: n.kind || ""}},
    h("b", {}, `${n.kind || "notice"}: `), n.text || "", h("span", {class: "meta"}, ends)));
}

main().catch(fail);
