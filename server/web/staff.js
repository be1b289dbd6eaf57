// What staff pages add to the shared chat and question list: a tap on a message's author opens
// the moderation sheet (warn, mute, ban, and the room's muted and banned people to lift: sheet
// module loaded on first use), delete on the message itself; answer / dismiss on an open
// question. The viewer page never loads it.
import {h} from "/static/dom.js";
import {t} from "/static/i18n.js";

const STAFF = new Set(["streamer", "moderator", "admin"]);

/** Open the moderation sheet (on `person` {user, name}, or on the list alone). */
export async function moderate(chat, person) {
  const {openModeration} = await import("/static/modsheet.js");
  return openModeration(chat, person);
}

/** ChatPanel `decorate`: the author opens the sheet; delete removes the message. */
export function moderation(chat, li, m) {
  const who = li.querySelector(".who");
  if (who) {
    who.replaceWith(h("button", {class: "who link-who", type: "button", testid: "chat-name",
      title: t("mod.open.title"), onclick: () => moderate(chat, {user: m.user, name: m.name})}, who.textContent));
  }
  if (STAFF.has(m.role)) return; // one of the team: their rank is the server's to weigh
  li.append(h("span", {class: "mod"},
    h("button", {class: "tiny", type: "button", testid: "delete",
      onclick: () => chat.act(chat.souk.deleteMessage(chat.where, m.id))}, t("mod.delete"))));
}

/** QuestionList `actions`: answer (typed into the row) or dismiss an open question. */
export function answering(list, q, li) {
  const input = h("input", {testid: "answer-input", placeholder: t("q.answer.ph"), maxlength: 1000});
  li.append(h("form", {class: "row answer-form", onsubmit: (e) => {
    e.preventDefault();
    if (input.value.trim()) list.act(list.souk.answer(list.room, q.id, input.value.trim()));
  }}, input, h("button", {class: "small primary", testid: "answer-send"}, t("q.answer")),
  h("button", {class: "small", type: "button", testid: "dismiss", onclick: () => list.act(list.souk.dismiss(list.room, q.id))}, t("q.dismiss"))));
}
