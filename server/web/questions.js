// The Q&A list: open questions by votes, answers as they come. A viewer upvotes an open one;
// other pages pass `actions(list, q, li)` (staff: answer / dismiss, staff.js; group: reply).
import {byTestId, explain, h} from "/static/dom.js";
import {onLang, t} from "/static/i18n.js";

export class QuestionList {
  /** `root` holds q-list (and q-error, q-empty). */
  constructor(root, souk, ch, {room, actions = upvote, onCount, origin} = {}) {
    this.root = root;
    this.souk = souk;
    this.ch = ch;
    this.room = room;
    this.actions = actions;
    this.onCount = onCount;
    this.origin = origin; // (q) -> where a mirrored question comes from (the group page)
    this.list = byTestId("q-list", root);
    this.error = byTestId("q-error", root);
    this.empty = byTestId("q-empty", root);
    this.items = new Map();
    this.rows = new Map(); // id -> {li, key}: rows are kept, so a half-typed answer survives events
    souk.on("question", (ev) => { if (ev.ch === ch) this.upsert(ev); });
    onLang(() => { this.rows.clear(); this.draw(); });
  }

  render(questions) {
    this.items.clear();
    this.rows.clear();
    for (const q of questions || []) this.items.set(q.id, q);
    this.draw();
  }

  upsert(q) {
    const old = this.items.get(q.id) || {};
    this.items.set(q.id, {...old, ...q});
    this.draw();
  }

  draw() {
    const rank = (q) => (q.status === "open" ? 0 : 1);
    if (this.onCount) this.onCount([...this.items.values()].filter((q) => q.status === "open").length);
    const qs = [...this.items.values()].sort((a, b) =>
      rank(a) - rank(b) || (b.votes || 0) - (a.votes || 0) || (a.asked_at || 0) - (b.asked_at || 0));
    let refocus = null;
    if (this.empty) this.empty.classList.toggle("hidden", qs.length > 0);
    const wanted = qs.map((q) => {
      const key = `${q.status}|${q.votes || 0}|${q.answer || ""}|${q.text}`;
      let row = this.rows.get(q.id);
      if (!row || row.key !== key) {
        const li = this.row(q);
        const old = row && row.li.querySelector("input");
        const fresh = li.querySelector("input");
        if (old && fresh) {
          fresh.value = old.value; // keep what staff were typing, and where
          if (document.activeElement === old) refocus = {el: fresh, caret: old.selectionStart};
        }
        if (row) row.li.replaceWith(li);
        row = {li, key};
        this.rows.set(q.id, row);
      }
      return row.li;
    });
    const current = [...this.list.children];
    if (wanted.length !== current.length || wanted.some((li, i) => li !== current[i])) {
      const focused = document.activeElement;
      const caret = focused && focused.tagName === "INPUT" ? focused.selectionStart : null;
      this.list.replaceChildren(...wanted);
      if (!refocus && focused && focused.isConnected && focused !== document.activeElement) {
        refocus = {el: focused, caret};
      }
    }
    if (refocus && refocus.el.isConnected) {
      refocus.el.focus();
      if (refocus.caret !== null) refocus.el.setSelectionRange(refocus.caret, refocus.caret);
    }
  }

  row(q) {
    const li = h("li", {class: `q ${q.status}`, testid: "question", dataset: {id: q.id, status: q.status}},
      h("span", {class: "votes", testid: "q-votes"}, `▲${q.votes || 0}`),
      h("span", {class: "who"}, q.name || t("chat.someone")),
      h("span", {class: "q-text", testid: "q-text"}, q.text),
      q.origin && this.origin ? h("span", {class: "meta", testid: "q-origin"}, ` · ${this.origin(q)}`) : null);
    if (q.status === "answered") {
      const by = q.answered_by && q.answered_by.name;
      const via = q.answered_by && q.answered_by.via === "group" ? t("q.inGroup") : "";
      li.append(h("div", {class: "answer", testid: "q-answer"},
        q.answer || (q.on_stream ? t("q.onStream") : ""), by ? h("span", {class: "meta"}, ` — ${by}${via}`) : null));
    } else if (q.status === "dismissed") {
      li.append(h("div", {class: "meta"}, t("q.dismissed")));
    } else {
      this.actions(this, q, li);
    }
    return li;
  }

  async act(promise) {
    try {
      const q = await promise;
      if (q && q.id) this.upsert(q);
      if (this.error) this.error.textContent = "";
    } catch (err) {
      if (this.error) this.error.textContent = explain(err);
    }
  }
}

/** A viewer's action on an open question: "me too" (not on one's own). */
function upvote(list, q, li) {
  const mine = list.souk.user && q.user === list.souk.user.id;
  li.prepend(h("span", {class: "actions"}, h("button", {class: "tiny", type: "button", testid: "upvote", disabled: mine,
    onclick: () => list.act(list.souk.upvote(list.room, q.id))}, t("q.upvote"))));
}
