// The moderation sheet of the staff pages (studio, group), loaded on the first tap on a
// message's author, with its stylesheet and strings: warn, mute (5 min, 1 h, 1 day) or ban that
// person, and the room's muted and banned people (the `sanctions` op) to unmute or unban.
// People are named as shoppers see each other (小*), never by id; a refusal says why.
import {avatar, clockText, explain, fill, h, maskName} from "/static/dom.js";
import {extendCatalog, onLang, t} from "/static/i18n.js";

const MUTES = [[300, "mod.mute.5m"], [3600, "mod.mute.1h"], [86400, "mod.mute.1d"]];
const LIFTED = new Set(["banned", "muted", "unbanned", "unmuted"]);
let sheet = null;

/** Open the sheet on `person` ({user, name}: the author tapped) or on the list alone. */
export async function openModeration(chat, person) {
  if (!sheet) {
    if (!document.querySelector('link[href="/static/modsheet.css"]')) {
      const css = h("link", {rel: "stylesheet", href: "/static/modsheet.css"});
      const loaded = new Promise((resolve) => { css.onload = css.onerror = resolve; });
      document.head.append(css);
      await loaded;
    }
    await extendCatalog("mod");
    sheet = new ModSheet();
  }
  sheet.open(chat, person);
}

class ModSheet {
  constructor() {
    this.chat = null;
    this.person = null;
    this.items = [];
    this.title = h("h2", {class: "grow"});
    this.whom = h("div", {class: "mod-person", testid: "mod-person"});
    this.status = h("div", {class: "mod-status", testid: "mod-status", role: "status"});
    this.error = h("div", {class: "error", testid: "mod-error", role: "alert"});
    this.listTitle = h("h3");
    this.list = h("ul", {class: "list mod-list", testid: "mod-list"});
    this.empty = h("p", {class: "meta", testid: "mod-empty"});
    this.closeBtn = h("button", {class: "close", type: "button", testid: "mod-close", onclick: () => this.close()}, "×");
    this.panel = h("section", {class: "mod-sheet", role: "dialog", "aria-modal": "true"},
      h("header", {class: "row"}, this.title, this.closeBtn), this.whom, this.error, this.status,
      this.listTitle, this.list, this.empty);
    this.root = h("div", {class: "mod-backdrop hidden", testid: "mod-sheet",
      onclick: (e) => { if (e.target === this.root) this.close(); }}, this.panel);
    document.addEventListener("keydown", (e) => { if (e.key === "Escape") this.close(); });
    document.body.append(this.root);
    onLang(() => { if (!this.root.classList.contains("hidden")) this.draw(); });
  }

  open(chat, person) {
    if (this.chat !== chat) {
      this.chat = chat;
      for (const type of LIFTED) {
        chat.souk.on(type, (ev) => { if (ev.ch === this.chat.ch && !this.root.classList.contains("hidden")) this.load(); });
      }
    }
    this.person = person || null;
    this.say(null);
    this.root.classList.remove("hidden");
    this.draw();
    this.load();
    clearInterval(this.timer);
    this.timer = setInterval(() => this.tick(), 1000); // mutes count down while it is open
    this.closeBtn.focus();
  }

  close() {
    clearInterval(this.timer);
    this.root.classList.add("hidden");
  }

  async load() {
    try {
      this.items = await this.chat.souk.sanctions(this.chat.where);
      this.drawList();
    } catch (err) { this.say(err); }
  }

  /** Run one action; the list follows; a refusal is a sentence (a rank: who may not be). */
  async act(promise, done) {
    this.say(null);
    try {
      await promise;
      this.status.textContent = done;
      await this.load();
    } catch (err) { this.say(err); }
  }

  say(err) {
    if (err) this.status.textContent = "";
    this.error.textContent = !err ? "" : err.code === "forbidden" ? t("mod.err.rank") : explain(err);
  }

  draw() {
    this.title.textContent = t("mod.title");
    const group = Boolean(this.chat.where.group);
    this.listTitle.textContent = group ? t("mod.list.group") : t("mod.list");
    this.closeBtn.title = t("mod.close");
    this.closeBtn.setAttribute("aria-label", t("mod.close"));
    const p = this.person;
    if (!p) fill(this.whom);
    else {
      const name = p.name || t("chat.someone");
      const {souk, where} = this.chat;
      fill(this.whom,
        h("div", {class: "row mod-head"}, avatar(name, {key: p.user}), h("b", {class: "grow", testid: "mod-name"}, name)),
        h("div", {class: "mod-actions"},
          h("button", {class: "small", type: "button", testid: "mod-warn",
            onclick: () => this.act(souk.warn(where, p.user), t("mod.done.warn", {name}))}, t("mod.warn")),
          ...MUTES.map(([s, key]) => h("button", {class: "small", type: "button", testid: `mod-mute-${s}`,
            onclick: () => this.act(souk.mute(where, p.user, s), t("mod.done.mute", {name}))}, t(key))),
          this.banButton(group ? t("mod.ban.group") : t("mod.ban.long"), name,
            () => this.act(souk.ban(where, p.user), t("mod.done.ban", {name})))));
    }
    this.drawList();
  }

  /** Ban takes two taps: the first arms the button ("tap again to ban 小*") for 4 s, so a
   * slip of the finger on a phone does not throw a shopper out of the room. */
  banButton(label, name, ban) {
    const btn = h("button", {class: "small danger", type: "button", testid: "mod-ban"}, label);
    const disarm = () => { clearTimeout(btn.timer); delete btn.dataset.armed; btn.textContent = label; };
    btn.onclick = () => {
      if (btn.dataset.armed) { disarm(); ban(); return; }
      btn.dataset.armed = "1";
      btn.textContent = t("mod.ban.confirm", {name});
      btn.timer = setTimeout(disarm, 4000);
    };
    return btn;
  }

  /** The mutes' time left, in place (no row is rebuilt under a finger). */
  tick() {
    const now = this.chat.souk.serverNow();
    for (const el of this.list.querySelectorAll("[data-until]")) el.textContent = left(Number(el.dataset.until), now);
  }

  drawList() {
    const {souk, where} = this.chat;
    const now = souk.serverNow();
    const rows = [...this.items].sort((a, b) => (b.at || 0) - (a.at || 0));
    fill(this.list, rows.map((s) => {
      const masked = s.name ? maskName(s.name) : t("chat.someone");
      const ban = s.kind === "ban";
      const lift = ban ? () => souk.unban(where, s.user) : () => souk.unmute(where, s.user);
      return h("li", {class: "row", testid: "mod-item", dataset: {kind: s.kind}},
        avatar(masked, {key: s.user, size: "sm"}),
        h("span", {class: "grow"}, h("b", {testid: "mod-item-name"}, masked), " ",
          h("span", {class: `meta mod-kind ${s.kind}`, dataset: ban ? {} : {until: String(s.until || 0)}},
            ban ? t("mod.banned") : left(s.until, now))),
        h("button", {class: "small", type: "button", testid: ban ? "mod-unban" : "mod-unmute",
          onclick: () => this.act(lift(), t(ban ? "mod.done.unban" : "mod.done.unmute", {name: masked}))},
        t(ban ? "mod.unban" : "mod.unmute")));
    }));
    this.empty.textContent = rows.length ? "" : t("mod.none");
  }
}

function left(until, now) {
  return t("mod.mutedLeft", {left: clockText(Math.max(0, (until || 0) - now))});
}
