// The chat panel of every page: the snapshot's recent messages, live `chat` events, deletions,
// mutes and bans, a send form, and (for staff) mute / ban / delete buttons on each message.
import {byTestId, explain, h, timeOfDay} from "/static/dom.js";

const STAFF = new Set(["streamer", "moderator", "admin"]);
const MAX_SHOWN = 200;

export class ChatPanel {
  /**
   * @param root  element holding [data-testid=chat-list], chat-form, chat-input, chat-error
   * @param where {room} or {group}
   */
  constructor(root, souk, where, {moderation = false, onMessage, describeReply} = {}) {
    this.root = root;
    this.souk = souk;
    this.where = where;
    this.ch = where.group ? `group:${where.group}` : `room:${where.room}`;
    this.moderation = moderation;
    this.onMessage = onMessage;
    this.describeReply = describeReply || ((id) => id);
    this.list = byTestId("chat-list", root);
    this.input = byTestId("chat-input", root);
    this.error = byTestId("chat-error", root);
    this.replyTo = null;
    this.replyBadge = byTestId("chat-replying", root);
    byTestId("chat-form", root).addEventListener("submit", (e) => { e.preventDefault(); this.send(); });
    souk.on("chat", (ev) => { if (ev.ch === this.ch) this.add(ev); });
    souk.on("message_deleted", (ev) => { if (ev.ch === this.ch) this.removeMessage(ev.id); });
    souk.on("banned", (ev) => {
      if (ev.ch !== this.ch) return;
      for (const li of this.list.querySelectorAll("li")) if (li.dataset.user === ev.user) li.remove();
      this.system(`${ev.user} was banned`);
    });
    souk.on("muted", (ev) => { if (ev.ch === this.ch) this.system(`${ev.user} is muted until ${timeOfDay(ev.until)}`); });
    souk.on("expelled", (ev) => { if (ev.ch === this.ch) this.showError({code: "banned"}); });
  }

  render(messages) {
    this.list.replaceChildren();
    for (const m of messages || []) this.add(m);
  }

  add(m) {
    if (this.list.querySelector(`li[data-id="${CSS.escape(m.id)}"]`)) return;
    const li = h("li", {testid: "chat-msg", dataset: {id: m.id, user: m.user}},
      h("span", {class: `who${STAFF.has(m.role) ? " staff" : ""}`}, m.name || m.user),
      m.reply_to ? h("span", {class: "meta", testid: "chat-reply-to"}, `↩ ${this.describeReply(m.reply_to)} `) : null,
      h("span", {testid: "chat-text"}, m.text));
    if (this.moderation && m.user !== (this.souk.user && this.souk.user.id) && !STAFF.has(m.role)) {
      li.prepend(h("span", {class: "actions"},
        h("button", {class: "small", testid: "mute", title: "mute 5 minutes", onclick: () => this.act(this.souk.mute(this.where, m.user, 300))}, "mute"),
        h("button", {class: "small", testid: "ban", onclick: () => this.act(this.souk.ban(this.where, m.user))}, "ban"),
        h("button", {class: "small", testid: "delete", onclick: () => this.act(this.souk.deleteMessage(this.where, m.id))}, "delete")));
    }
    this.list.append(li);
    while (this.list.children.length > MAX_SHOWN) this.list.firstElementChild.remove();
    this.list.scrollTop = this.list.scrollHeight;
    if (this.onMessage) this.onMessage(m);
  }

  removeMessage(id) {
    const li = this.list.querySelector(`li[data-id="${CSS.escape(id)}"]`);
    if (li) li.remove();
  }

  system(text) {
    this.list.append(h("li", {class: "meta", testid: "chat-system"}, text));
  }

  /** Reply to a message or a mirrored question (group answers go back to the room). */
  setReply(id, label) {
    this.replyTo = id;
    if (this.replyBadge) {
      this.replyBadge.classList.toggle("hidden", !id);
      this.replyBadge.textContent = id ? `replying to: ${label || id} ✕` : "";
      this.replyBadge.onclick = () => this.setReply(null);
    }
    if (id) this.input.focus();
  }

  async send() {
    const text = this.input.value.trim();
    if (!text) return;
    try {
      await this.souk.chat(this.where.room, text, {group: this.where.group, replyTo: this.replyTo || undefined});
      this.input.value = "";
      this.setReply(null);
      this.showError(null);
    } catch (err) {
      this.showError(err);
    }
  }

  async act(promise) {
    try { await promise; this.showError(null); } catch (err) { this.showError(err); }
  }

  showError(err) {
    if (this.error) this.error.textContent = err ? explain(err) : "";
  }
}
