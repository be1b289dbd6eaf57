// What staff pages add to the shared chat and question list: mute / ban / delete on a viewer's
// message, and answer / dismiss on an open question. The viewer page never loads it.
import {h} from "/static/dom.js";
import {t} from "/static/i18n.js";

/** ChatPanel `decorate`: moderation buttons on someone else's message. */
export function moderation(chat, li, m) {
  const act = (promise) => chat.act(promise);
  li.append(h("span", {class: "mod"},
    h("button", {class: "tiny", type: "button", testid: "mute", title: t("mod.mute.title"),
      onclick: () => act(chat.souk.mute(chat.where, m.user, 300))}, t("mod.mute")),
    h("button", {class: "tiny", type: "button", testid: "ban", onclick: () => act(chat.souk.ban(chat.where, m.user))}, t("mod.ban")),
    h("button", {class: "tiny", type: "button", testid: "delete",
      onclick: () => act(chat.souk.deleteMessage(chat.where, m.id))}, t("mod.delete"))));
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
