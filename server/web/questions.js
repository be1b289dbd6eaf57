// The Q&A list: open questions by votes, answers as they come. Three modes: a viewer upvotes,
// staff answer or dismiss, a group member answers by replying to the mirrored question.
import {byTestId, explain, h} from "/static/dom.js";

export class QuestionList {
  /**
   * @param root  element with [data-testid=q-list] (and q-error)
   * @param mode  "viewer" | "staff" | "group"
   */
  constructor(root, souk, ch, {mode = "viewer", room, onReply} = {}) {
    this.root = root;
    this.souk = souk;
    this.ch = ch;
    this.mode = mode;
    this.room = room;
    this.onReply = onReply;
    this.list = byTestId("q-list", root);
    this.error = byTestId("q-error", root);
    this.items = new Map();
    this.rows = new Map(); // id -> {li, key}: rows are kept, so a half-typed answer survives events
    souk.on("question", (ev) => { if (ev.ch === ch) this.upsert(ev); });
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
    const qs = [...this.items.values()].sort((a, b) =>
      rank(a) - rank(b) || (b.votes || 0) - (a.votes || 0) || (a.asked_at || 0) - (b.asked_at || 0));
    let refocus = null;
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
      h("span", {class: "who"}, q.name || q.user),
      h("span", {testid: "q-text"}, q.text),
      q.origin ? h("span", {class: "meta"}, ` · from room ${q.origin.room}`) : null);
    if (q.status === "answered") {
      const by = q.answered_by && (q.answered_by.name || q.answered_by.user);
      const via = q.answered_by && q.answered_by.via === "group" ? " (in a group)" : "";
      li.append(h("div", {class: "answer", testid: "q-answer"},
        q.answer || (q.on_stream ? "answered on stream" : ""), by ? h("span", {class: "meta"}, ` — ${by}${via}`) : null));
    } else if (q.status === "dismissed") {
      li.append(h("div", {class: "meta"}, "dismissed"));
    } else if (this.mode === "viewer") {
      const mine = this.souk.user && q.user === this.souk.user.id;
      li.prepend(h("span", {class: "actions"}, h("button", {class: "small", testid: "upvote", disabled: mine,
        onclick: () => this.act(this.souk.upvote(this.room, q.id))}, "▲ me too")));
    } else if (this.mode === "staff") {
      const input = h("input", {testid: "answer-input", placeholder: "answer…", maxlength: 1000});
      li.append(h("form", {class: "row", onsubmit: (e) => {
        e.preventDefault();
        if (input.value.trim()) this.act(this.souk.answer(this.room, q.id, input.value.trim()));
      }}, input, h("button", {class: "small primary", testid: "answer-send"}, "answer"),
      h("button", {class: "small", type: "button", testid: "dismiss", onclick: () => this.act(this.souk.dismiss(this.room, q.id))}, "dismiss")));
    } else if (this.mode === "group" && this.onReply) {
      li.prepend(h("span", {class: "actions"}, h("button", {class: "small", testid: "reply",
        onclick: () => this.onReply(q)}, "reply")));
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
