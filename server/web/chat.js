// The chat panel of every page: the snapshot's recent messages, live `chat` events, deletions,
// mutes and bans, a send form, and (for staff) mute / ban / delete buttons on each message.
// A message shows at once, marked "sending" until the server takes it; typed while the
// connection is down it leaves after the reconnect (the SDK's outbox), and if it cannot,
// it stays marked "not sent" with a retry that resends the same client id (`cid`).
import {newKey} from "/sdk/souk.js";
import {byTestId, explain, h} from "/static/dom.js";
import {t} from "/static/i18n.js";

const STAFF = new Set(["streamer", "moderator", "admin"]);
const OFFLINE = new Set(["connection_lost", "timeout"]);

export class ChatPanel {
  /**
   * @param root  element holding [data-testid=chat-list], chat-form, chat-input, chat-error
   * @param where {room} or {group}
   * @param opts  moderation (staff buttons), max (messages kept), onMessage(m),
   *   describeReply(id) -> text, onError(err) (else shown in chat-error)
   */
  constructor(root, souk, where, {moderation = false, onMessage, describeReply, onError, max = 200} = {}) {
    this.root = root;
    this.souk = souk;
    this.where = where;
    this.ch = where.group ? `group:${where.group}` : `room:${where.room}`;
    this.moderation = moderation;
    this.onMessage = onMessage;
    this.onError = onError;
    this.max = max;
    this.describeReply = describeReply || (() => t("chat.reply.message"));
    this.list = byTestId("chat-list", root);
    this.input = byTestId("chat-input", root);
    this.error = byTestId("chat-error", root);
    this.names = new Map(); // user id -> name, for notices about a user (events carry ids)
    this.replyTo = null;
    this.replyBadge = byTestId("chat-replying", root);
    byTestId("chat-form", root).addEventListener("submit", (e) => { e.preventDefault(); this.send(); });
    souk.on("chat", (ev) => { if (ev.ch === this.ch) this.add(ev); });
    souk.on("message_deleted", (ev) => { if (ev.ch === this.ch) this.removeMessage(ev.id); });
    souk.on("banned", (ev) => {
      if (ev.ch !== this.ch) return;
      for (const li of this.list.querySelectorAll("li")) if (li.dataset.user === ev.user) li.remove();
      this.system(t("chat.banned", {name: this.nameOf(ev.user)}));
    });
    souk.on("muted", (ev) => {
      if (ev.ch === this.ch) this.system(t("chat.muted", {name: this.nameOf(ev.user), minutes: minutesLeft(souk, ev.until)}));
    });
    souk.on("expelled", (ev) => { if (ev.ch === this.ch) this.showError({code: "banned"}); });
  }

  nameOf(user) {
    if (this.souk.user && user === this.souk.user.id) return t("chat.you");
    return this.names.get(user) || t("chat.someone");
  }

  /** Replace the history with a snapshot's; messages still being sent stay at the bottom. */
  render(messages) {
    const pending = [...this.list.querySelectorAll("li[data-state=sending], li[data-state=failed]")];
    this.list.replaceChildren();
    for (const m of messages || []) this.add(m);
    for (const li of pending) if (!li.dataset.id || !this.row(li.dataset.id)) this.list.append(li);
    this.scroll();
  }

  row(id) {
    return this.list.querySelector(`li[data-id="${CSS.escape(String(id))}"]`);
  }

  add(m) {
    if (!m || m.id === undefined || this.row(m.id)) return;
    if (m.user && m.name) this.names.set(m.user, m.name);
    const mine = this.souk.user && m.user === this.souk.user.id;
    // My own message, sent from this page: the row is there already, waiting for its id.
    const waiting = mine && [...this.list.querySelectorAll("li[data-state=sending]")]
      .find((li) => (m.cid && li.dataset.cid === m.cid) || (!li.dataset.id && li.dataset.text === m.text));
    if (waiting) { this.confirm(waiting, m.id); return; }
    this.list.append(this.build(m, mine));
    this.trim();
    this.scroll();
    if (this.onMessage) this.onMessage(m);
  }

  build(m, mine) {
    const role = STAFF.has(m.role) ? m.role : null;
    const li = h("li", {testid: "chat-msg", class: `msg${mine ? " mine" : ""}${role ? " staff" : ""}`,
      dataset: {id: String(m.id), user: m.user, state: "sent"}},
    role ? h("span", {class: "role-tag"}, t(`role.${role}`)) : null,
    h("span", {class: "who", testid: "chat-name"}, m.name || t("chat.someone")),
    m.reply_to ? h("span", {class: "reply-to", testid: "chat-reply-to"}, `↩ ${this.describeReply(m.reply_to)} `) : null,
    h("span", {class: "text", testid: "chat-text"}, m.text));
    if (this.moderation && !mine && !role) {
      li.append(h("span", {class: "mod"},
        h("button", {class: "tiny", type: "button", testid: "mute", title: t("mod.mute.title"),
          onclick: () => this.act(this.souk.mute(this.where, m.user, 300))}, t("mod.mute")),
        h("button", {class: "tiny", type: "button", testid: "ban",
          onclick: () => this.act(this.souk.ban(this.where, m.user))}, t("mod.ban")),
        h("button", {class: "tiny", type: "button", testid: "delete",
          onclick: () => this.act(this.souk.deleteMessage(this.where, m.id))}, t("mod.delete"))));
    }
    return li;
  }

  trim() {
    while (this.list.children.length > this.max) this.list.firstElementChild.remove();
  }

  scroll() {
    this.list.scrollTop = this.list.scrollHeight;
  }

  removeMessage(id) {
    const li = this.row(id);
    if (li) li.remove();
  }

  system(text) {
    this.list.append(h("li", {class: "msg system", testid: "chat-system"}, text));
    this.trim();
    this.scroll();
  }

  /** Reply to a message or a mirrored question (group answers go back to the room). */
  setReply(id, label) {
    this.replyTo = id;
    if (this.replyBadge) {
      this.replyBadge.classList.toggle("hidden", !id);
      this.replyBadge.textContent = id ? `${t("chat.replying", {text: label || ""})} ✕` : "";
      this.replyBadge.onclick = () => this.setReply(null);
    }
    if (id) this.input.focus();
  }

  send() {
    const text = this.input.value.trim();
    if (!text) return;
    this.input.value = "";
    const me = this.souk.user || {};
    const li = this.build({id: "", user: me.id, name: me.name, role: me.role, text, reply_to: this.replyTo}, true);
    li.removeAttribute("data-id");
    Object.assign(li.dataset, {state: "sending", cid: newKey(), text});
    this.list.append(li);
    this.scroll();
    this.deliver(li, this.replyTo);
    this.setReply(null);
  }

  async deliver(li, replyTo) {
    li.dataset.state = "sending";
    const retry = li.querySelector(".retry");
    if (retry) retry.remove();
    try {
      const id = await this.souk.chat(this.where.room, li.dataset.text,
        {group: this.where.group, replyTo: replyTo || undefined, cid: li.dataset.cid});
      this.confirm(li, id);
      this.showError(null);
    } catch (err) {
      if (OFFLINE.has(err.code)) {
        li.dataset.state = "failed";
        li.append(h("button", {class: "tiny retry", type: "button", testid: "chat-retry",
          onclick: () => this.deliver(li, replyTo)}, t("chat.retry")));
      } else {
        li.remove();
        if (!this.input.value) this.input.value = li.dataset.text;
        this.showError(err);
      }
    }
  }

  /** The server took a message we show as sending: it is that message now (once). */
  confirm(li, id) {
    const other = this.row(id);
    if (other && other !== li) { li.remove(); return; }
    li.dataset.id = String(id);
    li.dataset.state = "sent";
  }

  async act(promise) {
    try { await promise; this.showError(null); } catch (err) { this.showError(err); }
  }

  showError(err) {
    if (err && this.onError) { this.onError(err); return; }
    if (this.error) this.error.textContent = err ? explain(err) : "";
  }
}

function minutesLeft(souk, until) {
  return Math.max(1, Math.round((Number(until || 0) - souk.serverNow()) / 60000));
}
