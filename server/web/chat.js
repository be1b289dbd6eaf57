// The chat panel of every page (with mute / ban / delete for staff). A message shows at once,
// "sending" until the server takes it; typed offline it leaves after the reconnect (the SDK's
// outbox), else it stays "not sent" with a retry that resends the same client id (`cid`).
import {newKey} from "/sdk/souk.js";
import {byTestId, explain, h} from "/static/dom.js";
import {t} from "/static/i18n.js";

const STAFF = new Set(["streamer", "moderator", "admin"]);
const OFFLINE = new Set(["connection_lost", "timeout"]);

export class ChatPanel {
  /** `root` holds chat-list, chat-form, chat-input (and chat-error); `where` is {room} or {group}. */
  constructor(root, souk, where, {decorate, onMessage, describeReply, onError, max = 200} = {}) {
    this.root = root;
    this.souk = souk;
    this.where = where;
    this.ch = where.group ? `group:${where.group}` : `room:${where.room}`;
    this.decorate = decorate; // (chat, li, m): staff buttons on others' messages (staff.js)
    this.onMessage = onMessage;
    this.onError = onError;
    this.max = max;
    this.describeReply = describeReply || (() => "…");
    this.list = byTestId("chat-list", root);
    this.input = byTestId("chat-input", root);
    this.error = byTestId("chat-error", root);
    this.names = new Map(); // user id -> name, for notices about a user (events carry ids)
    this.replyTo = null; // a group page answers a mirrored question by replying to it
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
    if (waiting) this.confirm(waiting, m.id);
    else this.list.append(this.build(m, mine));
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
    if (this.decorate && !mine && m.id) this.decorate(this, li, m); // staff too: the server ranks
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
    if (this.onSent) this.onSent();
  }

  async deliver(li, replyTo) {
    li.dataset.state = "sending";
    const retry = li.querySelector(".retry");
    if (retry) retry.remove();
    try {
      const id = await this.souk.chat(this.where.room, li.dataset.text,
        {group: this.where.group, replyTo: replyTo || undefined, cid: li.dataset.cid});
      const seen = this.row(id);
      this.confirm(li, id);
      const me = this.souk.user || {};
      if (!seen && this.onMessage) this.onMessage({id, user: me.id, name: me.name, text: li.dataset.text, reply_to: replyTo});
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
