// Souk browser SDK: one ES module, no build step; usage in docs/web.md. Like the Python SDK:
// replies matched by `rid`, typed errors (`err.code`), reconnect with backoff and `resume` of
// every channel (nothing missed, nothing twice). Media and chat are intents kept across drops:
// a watch retries while nothing is published, a publish comes back after a restart, a chat
// typed offline leaves once with its client id (`cid`). JSON frames: no msgpack in browsers.

export const SUBPROTOCOL_JSON = "souk.v1.json";

/** Close codes the server uses (client_sdk/protocol.py `Close`). */
export const Close = Object.freeze({
  NORMAL: 1000, POLICY: 1008, TOO_BIG: 1009, RESTARTING: 1012,
  AUTH_TIMEOUT: 4401, KICKED: 4403, SLOW_CONSUMER: 4408,
});

/** Close codes after which reconnecting cannot help (the server will refuse again). */
const FINAL_CLOSES = new Set([Close.POLICY, Close.KICKED]);

/** Media errors worth retrying: the stream may come (not_found), the link may come back. */
const MEDIA_RETRY = new Set(["not_found", "connection_lost", "timeout", "rate_limited", "unavailable", "internal"]);

/** An `error` reply, or a local failure (`connection_lost`, `timeout`), with a stable code. */
export class SoukError extends Error {
  constructor(code, message, frame = null) {
    super(message || code);
    this.name = "SoukError";
    this.code = code;
    this.frame = frame;
  }
}

/** A fresh random key: idempotency keys for `buy` and team ops, client ids for chat. */
export function newKey() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID().replace(/-/g, "");
  return `${Date.now().toString(36)}${Math.random().toString(36).slice(2)}`;
}

function clean(fields) {
  const out = {};
  for (const [k, v] of Object.entries(fields)) if (v !== undefined && v !== null) out[k] = v;
  return out;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The page's websocket URL: same host and scheme as the page (ws: or wss:). */
export function defaultUrl(loc = globalThis.location) {
  return `${loc.protocol === "https:" ? "wss:" : "ws:"}//${loc.host}/ws`;
}

/** This page's token: `?token=`, else (demo mode) one from /api/demo/token, kept for the tab
 * (a reload stays the same person). Throws a SoukError when neither is available. */
export async function pageToken({role = "viewer", room = "demo", name} = {}) {
  const params = new URLSearchParams(globalThis.location.search);
  const given = params.get("token");
  if (given) return given;
  const key = `souk.demo.${role}.${room}`;
  try {
    const kept = sessionStorage.getItem(key);
    const exp = kept && JSON.parse(atob(kept.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).exp;
    if (kept && exp * 1000 > Date.now() + 60000) return kept;
  } catch { /* no storage, or not a token: ask again */ }
  const q = new URLSearchParams({role, room});
  if (params.get("name") || name) q.set("name", params.get("name") || name);
  const res = await fetch(`/api/demo/token?${q}`);
  const body = await res.json().catch(() => ({}));
  if (!res.ok || !body.token) {
    throw new SoukError(body.error || "unauthorized",
      body.message || "no ?token= in the URL and the server is not in demo mode");
  }
  try { sessionStorage.setItem(key, body.token); } catch { /* this page only */ }
  return body.token;
}

export class Souk {
  /** `url` (default: this host's /ws), a Souk JWT, options (docs/web.md: reconnect, backoff,
   * requestTimeout, iceServers, trickle, iceGatherTimeout, mediaBackoff, outboxTimeout). */
  constructor(url, token, opts = {}) {
    this.url = url || defaultUrl();
    this.token = token;
    this.reconnect = opts.reconnect !== false;
    this.backoff = opts.backoff || [100, 5000];
    this.requestTimeout = opts.requestTimeout || 15000;
    this.iceServers = opts.iceServers || null; // learnt from publish/watch replies otherwise
    this.trickle = !!opts.trickle;
    this.iceGatherTimeout = opts.iceGatherTimeout || 2000;
    this.mediaBackoff = opts.mediaBackoff || [300, 2000];
    this.mediaDisconnectMs = opts.mediaDisconnectMs || 5000;
    this.outboxTimeout = opts.outboxTimeout || 60000;
    this.user = null;
    this.channels = new Map(); // ch -> {seq, epoch, resuming}
    this.reconnects = 0;
    this.serverOffsetMs = 0; // server clock minus ours
    this.rttMs = null;
    this.state = "idle"; // idle | connecting | open | reconnecting | closed
    this._ws = null;
    this._rid = 0;
    this._pending = new Map();
    this._handlers = new Map();
    this._closed = false;
    this._conn = 0; // +1 per authenticated connection: media sessions belong to one
    this._media = new Map(); // "publish:<room>" | "watch:<room>" -> intent
  }

  // ---- events --------------------------------------------------------------------------
  /** Listen to one event `type` or "*" (also `connection`, `media`, `error`); returns the remover. */
  on(type, fn) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    const set = this._handlers.get(type);
    if (set) set.delete(fn);
  }

  /** Resolve with the next event of `type` that satisfies `pred` (rejects after timeoutMs). */
  once(type, pred = () => true, timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { off(); reject(new SoukError("timeout", `no ${type} event`)); }, timeoutMs);
      const off = this.on(type, (ev) => {
        if (!pred(ev)) return;
        clearTimeout(timer);
        off();
        resolve(ev);
      });
    });
  }

  _emit(type, ev) {
    for (const key of [type, "*"]) {
      const set = this._handlers.get(key);
      if (!set) continue;
      for (const fn of [...set]) {
        try { fn(ev); } catch (e) { console.error("souk listener failed", e); }
      }
    }
  }

  _setState(state, extra = {}) {
    this.state = state;
    this._emit("connection", {type: "connection", state, ...extra});
  }

  /** Open and authenticated, with a socket that can send now. */
  get usable() {
    return this.state === "open" && !!this._ws && this._ws.readyState === WebSocket.OPEN;
  }

  /** Resolves when the connection is usable (authenticated); rejects once closed for good. */
  untilOpen(timeoutMs = Infinity) {
    if (this.usable) return Promise.resolve();
    if (this._closed) return Promise.reject(new SoukError("connection_lost", "closed"));
    return new Promise((resolve, reject) => {
      let timer = null;
      const off = this.on("connection", (ev) => {
        if (ev.state === "open") { done(); resolve(); }
        else if (ev.state === "closed") { done(); reject(new SoukError("connection_lost", "closed")); }
      });
      const done = () => { off(); clearTimeout(timer); };
      if (Number.isFinite(timeoutMs)) {
        timer = setTimeout(() => { done(); reject(new SoukError("connection_lost", "still offline")); }, timeoutMs);
      }
    });
  }

  // ---- lifecycle -----------------------------------------------------------------------
  /** Open the socket and authenticate; resolves with the server's `user`. */
  async connect() {
    this._closed = false;
    this._setState("connecting");
    try {
      await this._open();
      const user = await this._authenticate();
      this._conn += 1;
      this._setState("open");
      return user;
    } catch (err) {
      this._closed = true;
      if (this._ws) { const ws = this._ws; this._ws = null; ws.onclose = null; ws.close(); }
      this._setState("closed", {code: err.code});
      throw err;
    }
  }

  /** Close for good (no reconnect). Media sessions are stopped. */
  close() {
    this._closed = true;
    for (const key of [...this._media.keys()]) this._stopMedia(key);
    if (this._ws) this._ws.close(1000, "bye");
    this._failPending(new SoukError("connection_lost", "client closed"));
    this._setState("closed");
  }

  /** The server's clock now (ms since the epoch): countdowns agree with the server. */
  serverNow() {
    return Date.now() + this.serverOffsetMs;
  }

  _open() {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(this.url, [SUBPROTOCOL_JSON]);
      } catch (e) {
        reject(new SoukError("connection_lost", String(e)));
        return;
      }
      let opened = false;
      ws.onopen = () => { opened = true; this._ws = ws; resolve(); };
      ws.onmessage = (msg) => this._handle(msg.data);
      ws.onerror = () => { if (!opened) reject(new SoukError("connection_lost", "websocket failed to open")); };
      ws.onclose = (e) => {
        if (!opened) { reject(new SoukError("connection_lost", `closed ${e.code}`)); return; }
        if (this._ws === ws) this._onClose(e);
      };
    });
  }

  async _authenticate() {
    const t0 = Date.now();
    const reply = await this.request("auth", {token: this.token});
    this._clock(t0, Date.now(), reply.server_time);
    this.user = reply.user;
    if (typeof reply.ch === "string") {
      const st = this._channel(reply.ch);
      if (st.epoch == null) { st.epoch = reply.epoch ?? null; st.seq = Number(reply.seq || 0); }
    }
    return this.user;
  }

  _clock(t0, t1, serverTime) {
    if (typeof serverTime !== "number") return;
    const rtt = t1 - t0;
    // Keep the estimate from the fastest round trip: its midpoint is the least uncertain.
    if (this.rttMs === null || rtt <= this.rttMs * 1.5) {
      this.rttMs = this.rttMs === null ? rtt : Math.min(rtt, this.rttMs);
      this.serverOffsetMs = Math.round(serverTime - (t0 + t1) / 2);
    }
  }

  _onClose(e) {
    this._ws = null;
    this._failPending(new SoukError("connection_lost", `connection closed (${e.code})`));
    if (this._closed) return;
    if (!this.reconnect || FINAL_CLOSES.has(e.code)) {
      this._closed = true;
      for (const key of [...this._media.keys()]) this._stopMedia(key);
      this._setState("closed", {code: e.code, reason: e.reason});
      return;
    }
    this._setState("reconnecting", {code: e.code, reason: e.reason});
    this._reconnectLoop();
  }

  async _reconnectLoop() {
    let delay = this.backoff[0];
    while (!this._closed) {
      await sleep(delay * (0.5 + Math.random()));
      if (this._closed) return;
      try {
        await this._open();
        await this._authenticate();
        for (const [ch, st] of [...this.channels]) {
          st.resuming = true;
          try {
            const reply = await this.request("resume", {ch, seq: st.seq, epoch: st.epoch});
            if (reply.resync) { st.seq = Number(reply.seq); st.epoch = reply.epoch ?? null; }
          } catch (err) {
            if (err.code === "connection_lost") throw err;
            this.channels.delete(ch); // forbidden now (banned, token changed): stop following
          } finally {
            st.resuming = false;
          }
        }
        this.reconnects += 1;
        this._conn += 1;
        this._setState("open", {reconnected: true});
        // The server dropped our media sessions with the old connection: start them again.
        for (const m of this._media.values()) if (m.wake) m.wake("reconnected");
        return;
      } catch (err) {
        if (this._ws) { const ws = this._ws; this._ws = null; ws.onclose = null; ws.close(); }
        delay = Math.min(this.backoff[1], delay * 2);
      }
    }
  }

  _failPending(err) {
    for (const p of this._pending.values()) { clearTimeout(p.timer); p.reject(err); }
    this._pending.clear();
  }

  // ---- requests ------------------------------------------------------------------------
  /** Send an op and resolve with its `ok` reply; reject with a SoukError on `error`. */
  request(op, fields = {}) {
    const ws = this._ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new SoukError("connection_lost", "not connected"));
    }
    const rid = ++this._rid;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(rid);
        reject(new SoukError("timeout", `no reply to ${op} in ${this.requestTimeout} ms`));
      }, this.requestTimeout);
      this._pending.set(rid, {resolve, reject, timer});
      ws.send(JSON.stringify({op, rid, ...clean(fields)}));
    });
  }

  /** An op that must arrive once: offline it waits (in call order) for the reconnect; lost in
   * flight it goes again with the same fields (its own id, e.g. `cid`, makes that safe). */
  async deliver(op, fields = {}) {
    const deadline = Date.now() + this.outboxTimeout;
    for (;;) {
      if (!this.usable) await this.untilOpen(Math.max(0, deadline - Date.now()));
      try {
        return await this.request(op, fields);
      } catch (err) {
        if (err.code !== "connection_lost" || this._closed || Date.now() >= deadline) throw err;
      }
    }
  }

  /** Fire and forget: no rid, so no reply (errors arrive as `error` events). */
  send(op, fields = {}) {
    if (this._ws && this._ws.readyState === WebSocket.OPEN) {
      this._ws.send(JSON.stringify({op, ...clean(fields)}));
    }
  }

  _handle(data) {
    let frame;
    try { frame = JSON.parse(data); } catch { return; }
    if (!frame || typeof frame !== "object") return;
    const op = frame.op;
    if ((op === "ok" || op === "error") && Number.isInteger(frame.rid)) {
      const p = this._pending.get(frame.rid);
      if (!p) return;
      this._pending.delete(frame.rid);
      clearTimeout(p.timer);
      if (op === "ok") p.resolve(frame);
      else p.reject(new SoukError(frame.code, frame.message, frame));
      return;
    }
    if (op === "event") this._dispatch(frame);
    else if (op === "batch") for (const item of frame.items || []) this._dispatch(item);
    else if (op === "error") this._emit("error", {type: "error", ...frame});
  }

  _channel(ch) {
    let st = this.channels.get(ch);
    if (!st) { st = {seq: 0, epoch: null, resuming: false}; this.channels.set(ch, st); }
    return st;
  }

  _dispatch(ev) {
    if (!ev || typeof ev !== "object") return;
    const ch = ev.ch;
    if (typeof ch === "string" && ev.type === "resync") {
      const st = this._channel(ch);
      st.seq = Number(ev.seq || 0);
      st.epoch = ev.epoch ?? null;
    } else if (typeof ch === "string" && Number.isInteger(ev.seq)) {
      let st = this.channels.get(ch);
      if (!st) { st = {seq: ev.seq - 1, epoch: null, resuming: false}; this.channels.set(ch, st); }
      if (ev.seq <= st.seq) return; // seen already (overlap of snapshot/resume and stream)
      if (ev.seq > st.seq + 1) {
        // A hole: the resume replays it and everything after, in order.
        if (!st.resuming && this.state === "open") this._resume(ch, st);
        return;
      }
      st.seq = ev.seq;
    } else if (ev.type === "rewatch" && typeof ev.room === "string") {
      // The media worker that served this watch is gone and the server forgot the viewer:
      // end the peer and offer again at once (no unwatch: nothing is left to drop).
      const m = this._media.get(`watch:${ev.room}`);
      if (m && m.wake) m.wake("rewatch");
    }
    this._emit(ev.type, ev);
  }

  async _resume(ch, st) {
    st.resuming = true;
    try {
      const reply = await this.request("resume", {ch, seq: st.seq, epoch: st.epoch});
      if (reply.resync) { st.seq = Number(reply.seq); st.epoch = reply.epoch ?? null; }
    } catch (err) {
      console.warn("souk: resume failed", ch, err.code);
    } finally {
      st.resuming = false;
    }
  }

  // ---- channels ------------------------------------------------------------------------
  /** Join a room (or `{group}`) and resolve with its snapshot; events follow. */
  async join(room, {group} = {}) {
    const reply = await this.request("join", group ? {group} : {room});
    const snap = reply.snapshot;
    const st = this._channel(reply.ch);
    st.seq = Number(snap.seq || 0);
    st.epoch = snap.epoch ?? null;
    return snap;
  }

  async leave(room, {group} = {}) {
    await this.request("leave", group ? {group} : {room});
    this.channels.delete(group ? `group:${group}` : `room:${room}`);
  }

  /** Resume a channel explicitly (the SDK does it by itself after drops and gaps). */
  async resume(ch) {
    const st = this._channel(ch);
    return this._resume(ch, st);
  }

  // ---- the ops (same names as the Python SDK, camelCase) -------------------------------
  async ping() {
    const t0 = Date.now();
    const reply = await this.request("ping");
    this._clock(t0, Date.now(), reply.pong);
    return reply.pong;
  }

  /** Chat (`{group}` for a group); sent once even across a drop (`deliver`): the server answers
   * a resend of the same `cid` with the first message. Pass the `cid` again to retry. */
  async chat(room, text, {group, replyTo, cid = newKey()} = {}) {
    const reply = await this.deliver("chat", {...(group ? {group} : {room}), text, reply_to: replyTo, cid});
    return reply.id;
  }

  like(room, count = 1) { return this.request("like", {room, count}); }

  async ask(room, text) { return (await this.request("ask", {room, text})).question; }
  async upvote(room, question) { return (await this.request("upvote", {room, question})).question; }
  async answer(room, question, text, {onStream} = {}) {
    return (await this.request("answer", {room, question, text, on_stream: onStream || undefined})).question;
  }
  async dismiss(room, question) { return (await this.request("dismiss", {room, question})).question; }

  async roomCreate(room, {title} = {}) { return (await this.request("room_create", {room, title})).room; }
  async roomState(room, state) { return (await this.request("room_state", {room, state})).state; }
  async pin(room, product) { return (await this.request("pin", {room, product})).pinned; }

  async productCreate({id, title, price, stock, image, currency} = {}) {
    return (await this.request("product_create", {id, title, price, stock, image, currency})).product;
  }
  /** The shop's products (the catalogue the studio pins and sells from). */
  async products() { return (await this.request("products")).products; }
  /** `{product, price, stock, durationS, perUserLimit, startsAt?}`; price in cents. */
  async saleCreate(room, {product, price, stock, durationS, perUserLimit, startsAt} = {}) {
    return (await this.request("sale_create", {
      room, product, price, stock, duration_s: durationS, per_user_limit: perUserLimit, starts_at: startsAt,
    })).sale;
  }
  saleCancel(room, sale) { return this.request("sale_cancel", {room, sale}); }
  /** Buy in a flash sale; the same `key` never orders twice (retries are safe). */
  async buy(sale, qty = 1, key = newKey()) { return (await this.request("buy", {sale, qty, key})).order; }
  async ordersMine() { return (await this.request("orders_mine")).orders; }
  /** The caller's open and recent teams (for a reloaded page). */
  async teamsMine() { return (await this.request("teams_mine")).teams; }
  async salesStats(room) {
    const reply = await this.request("sales_stats", {room});
    return reply.stats || reply;
  }
  /** A lucky draw (福袋) in `where` = `{room}` or `{group}`: `{title, prize: {product} | {coupon},
   * winners, durationS, condition: {keyword, watch_s, group}}`. */
  async drawCreate(where, {title, prize, winners, durationS, condition} = {}) {
    return (await this.request("draw_create", {...where, title, prize, winners, duration_s: durationS, condition})).draw;
  }
  /** Enter a draw (the room or group joined); resolves once the entry is durable. */
  drawEnter(draw) { return this.request("draw_enter", {draw}); }
  /** The latest draws of `where` (`{room}` or `{group}`), each with my `entered` and `won`. */
  async draws(where) { return (await this.request("draws", where)).draws; }
  async drawCancel(draw) { return (await this.request("draw_cancel", {draw})).draw; }
  async teambuyCreate(room, {product, price, size, windowS, stock} = {}) {
    const reply = await this.request("teambuy_create", {room, product, price, size, window_s: windowS, stock});
    return reply.offer || reply.teambuy || reply;
  }
  async teamOpen(offer, key = newKey()) { return (await this.request("team_open", {offer, key})).team; }
  async teamJoin(offer, team, key = newKey()) { return (await this.request("team_join", {offer, team, key})).team; }

  async groupCreate(fields) { return (await this.request("group_create", fields)).group; }
  async groupJoin(group, extra = {}) { return (await this.request("group_join", {group, ...extra})).group; }
  groupLeave(group) { return this.request("group_leave", {group}); }
  async groupMembers(group) { return (await this.request("group_members", {group})).members; }
  async linkGroups(room, groups) { return (await this.request("link_groups", {room, groups})).groups; }
  notice(where, kind, text) { return this.request("notice", {...where, kind, text}); }

  /** `where` is `{room}` or `{group}`; `seconds` defaults to the server's (300). */
  async mute(where, user, seconds) { return this.request("mute", {...where, user, seconds}); }
  ban(where, user) { return this.request("ban", {...where, user}); }
  unban(where, user) { return this.request("unban", {...where, user}); }
  unmute(where, user) { return this.request("unmute", {...where, user}); }
  /** The bans and running mutes of `where`: [{user, name, kind, until, by, at}] (staff). */
  async sanctions(where) { return (await this.request("sanctions", {...where})).sanctions || []; }
  deleteMessage(where, message) { return this.request("delete_message", {...where, message}); }
  warn(where, user) { return this.request("warn", {...where, user}); }
  remove(where, user) { return this.request("remove", {...where, user}); }

  // ---- WebRTC (signalling over the same websocket) -------------------------------------
  // publish / watch are intents kept until unpublish / unwatch, offered again with backoff
  // whenever the session is lost; a watch refused `not_found` re-sends the same offer. Pages
  // follow `media` events {kind, room, state, code?, pc}, never a peer (a replaced one fires
  // nothing): connecting, connected, waiting (nothing published), reconnecting, failed, stopped.

  /** Publish a MediaStream; resolves with the first accepted peer, rejects only if retrying cannot help. */
  publish(stream, room, {trickle = this.trickle} = {}) {
    return this._startMedia({kind: "publish", room, stream, trickle});
  }

  async unpublish(room) {
    const held = this._stopMedia(`publish:${room}`);
    if (held) return this.request("unpublish", {room});
    return null;
  }

  /** Watch `room` in a <video>; callable before `connect()` resolves (gathering overlaps it).
   * Resolves with the first accepted peer; rejects only if retrying cannot help. */
  watch(video, room, {trickle = this.trickle} = {}) {
    return this._startMedia({kind: "watch", room, video, trickle});
  }

  async unwatch(room) {
    const held = this._stopMedia(`watch:${room}`);
    if (held) return this.request("unwatch", {room});
    return null;
  }

  /** The current state of a publish / watch intent (`media` events carry its changes). */
  mediaState(kind, room) {
    const m = this._media.get(`${kind}:${room}`);
    return m ? m.state : "stopped";
  }

  /** The RTCPeerConnection a publish / watch uses now (for getStats), or null. */
  mediaPeer(kind, room) {
    const m = this._media.get(`${kind}:${room}`);
    return m && m.answered ? m.pc : null;
  }

  ice(room, candidate) { return this.request("ice", {room, candidate}); }

  _startMedia(spec) {
    const key = `${spec.kind}:${spec.room}`;
    this._stopMedia(key);
    const m = {...spec, key, pc: null, state: "", answered: false, conn: 0, wake: null, stopped: false};
    m.ready = new Promise((resolve, reject) => { m.resolve = resolve; m.reject = reject; });
    m.ready.catch(() => {}); // a caller that does not wait must not see an unhandled rejection
    this._media.set(key, m);
    this._mediaLoop(m);
    return m.ready;
  }

  /** Stop an intent; true when the server holds a session of it on this connection. */
  _stopMedia(key) {
    const m = this._media.get(key);
    if (!m) return false;
    this._media.delete(key);
    m.stopped = true;
    const held = m.answered && m.conn === this._conn && this.state === "open";
    if (m.wake) m.wake("stopped");
    this._closePeer(m);
    this._mediaState(m, "stopped");
    return held;
  }

  _closePeer(m) {
    const pc = m.pc;
    m.pc = null;
    m.answered = false;
    if (pc) { try { pc.close(); } catch { /* already closed */ } }
  }

  _mediaState(m, state, extra = {}) {
    if (m.state === state && !extra.code) return;
    m.state = state;
    this._emit("media", {type: "media", kind: m.kind, room: m.room, state, pc: m.answered ? m.pc : null, ...extra});
  }

  /** Sleep that an intent's stop or a reconnect cuts short. */
  _mediaPause(m, ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => { m.wake = null; resolve("timer"); }, ms);
      m.wake = (why) => { clearTimeout(timer); m.wake = null; resolve(why); };
    });
  }

  async _mediaLoop(m) {
    const [minDelay, maxDelay] = this.mediaBackoff;
    let delay = minDelay;
    while (!m.stopped) {
      if (!this.usable) {
        this._mediaState(m, m.state === "connected" || m.state === "reconnecting" ? "reconnecting" : "connecting");
        // A fresh offer is ready (gathered) by the time the connection is.
        if (!m.pc) await this._offer(m).catch(() => this._closePeer(m));
        try { await this.untilOpen(); } catch { if (!m.stopped) this._mediaState(m, "stopped"); return; }
        continue;
      }
      let sent = 0;
      try {
        if (!m.pc) await this._offer(m);
        if (m.stopped) break;
        if (m.state !== "waiting" && m.state !== "reconnecting") this._mediaState(m, "connecting");
        // Trickling, the offer leaves without candidates and every one goes by `ice` after the
        // answer (whatever the browser had gathered by now): one path, whatever the timing.
        let sdp = m.pc.localDescription.sdp;
        if (m.trickle) sdp = sdp.replace(/^a=(candidate|end-of-candidates).*\r?\n/gm, "");
        else sent = m.cands.length;
        const conn = this._conn;
        const reply = await this.request(m.kind, {room: m.room, sdp});
        if (m.stopped) {
          // Stopped while the offer was out: let the server drop the session it just made.
          if (conn === this._conn) this.request(m.kind === "watch" ? "unwatch" : "unpublish", {room: m.room}).catch(() => {});
          break;
        }
        if (conn !== this._conn) continue; // answered on a connection that is gone
        this._applyIceServers(m.pc, reply);
        await m.pc.setRemoteDescription({type: "answer", sdp: reply.sdp});
        m.answered = true;
        m.conn = conn;
      } catch (err) {
        if (m.stopped) break;
        const code = err.code || "failed";
        if (!MEDIA_RETRY.has(code) && err instanceof SoukError) {
          this._closePeer(m);
          this._media.delete(m.key);
          m.stopped = true;
          this._mediaState(m, "failed", {code});
          m.reject(err);
          return;
        }
        if (code === "not_found" && m.kind === "watch") {
          // Nothing published (yet): the same offer goes again; it holds no server state.
          this._mediaState(m, "waiting", {code});
        } else {
          this._closePeer(m);
          if (m.state !== "waiting") this._mediaState(m, "reconnecting", {code});
        }
        await this._mediaPause(m, delay * (0.75 + Math.random() / 2));
        delay = Math.min(maxDelay, delay * 2);
        continue;
      }
      // Accepted: follow the peer until it fails, the websocket reconnects, or the intent stops.
      const pc = m.pc;
      m.trickling = m.trickle;
      if (m.trickle) for (const c of m.cands.slice(sent)) this._sendIce(m.room, c);
      delay = minDelay;
      m.resolve(pc);
      const why = await this._follow(m, pc);
      m.trickling = false;
      if (m.stopped) break;
      this._closePeer(m);
      this._mediaState(m, "reconnecting", {code: why});
      if (why !== "reconnected" && why !== "rewatch") await this._mediaPause(m, minDelay);
    }
  }

  /** Resolves with why the session ended: failed, disconnected (for too long), reconnected, stopped. */
  _follow(m, pc) {
    return new Promise((resolve) => {
      let discTimer = null;
      const done = (why) => {
        clearTimeout(discTimer);
        pc.removeEventListener("connectionstatechange", check);
        m.wake = null;
        resolve(why);
      };
      const check = () => {
        const s = pc.connectionState;
        if (s === "connected") { clearTimeout(discTimer); discTimer = null; this._mediaState(m, "connected"); }
        else if (s === "failed" || s === "closed") done(s);
        else if (s === "disconnected" && !discTimer) discTimer = setTimeout(() => done("disconnected"), this.mediaDisconnectMs);
        else if (s === "connecting" && m.state !== "connected") this._mediaState(m, "connecting");
      };
      m.wake = done;
      pc.addEventListener("connectionstatechange", check);
      check();
    });
  }

  /** A new peer connection with its offer set and (unless trickling) its candidates gathered. */
  async _offer(m) {
    this._closePeer(m);
    const pc = this._peerFor();
    m.pc = pc;
    m.cands = [];
    pc.addEventListener("icecandidate", (e) => {
      const c = e.candidate ? e.candidate.toJSON() : {candidate: "", sdpMid: "0", sdpMLineIndex: 0};
      if (m.pc !== pc) return;
      m.cands.push(c);
      if (m.trickling) this._sendIce(m.room, c);
    });
    if (m.kind === "watch") {
      pc.addTransceiver("video", {direction: "recvonly"});
      pc.addTransceiver("audio", {direction: "recvonly"});
      const stream = new MediaStream();
      pc.addEventListener("track", (e) => {
        if (m.pc !== pc) return;
        stream.addTrack(e.track);
        const video = m.video;
        if (video.srcObject !== stream) video.srcObject = stream;
        const played = video.play();
        if (played && played.catch) played.catch(() => { video.muted = true; video.play().catch(() => {}); });
      });
    } else {
      for (const track of m.stream.getTracks()) pc.addTransceiver(track, {direction: "sendonly", streams: [m.stream]});
    }
    await pc.setLocalDescription(await pc.createOffer());
    if (!(m.trickle && !this._noTrickle)) await this._gathered(pc);
    m.trickle = m.trickle && !this._noTrickle;
  }

  _applyIceServers(pc, reply) {
    if (!Array.isArray(reply.ice_servers) || this.iceServers) return;
    // The server's STUN/TURN list applies from this peer on (and to the next connection).
    try { pc.setConfiguration({...pc.getConfiguration(), iceServers: reply.ice_servers}); } catch { /* fixed after gathering */ }
    this._serverIce = reply.ice_servers;
  }

  /** Wait for the offer's candidates: host-only ones come within ms, so the offer leaves when they
   * stop (Chromium says "complete" ~120 ms later for nothing); with STUN/TURN, until complete. */
  async _gathered(pc) {
    if (pc.iceGatheringState === "complete") return;
    const hostOnly = !(pc.getConfiguration().iceServers || []).length;
    await new Promise((resolve) => {
      const timer = setTimeout(done, this.iceGatherTimeout);
      const some = pc.localDescription && pc.localDescription.sdp.includes("a=candidate");
      let quiet = hostOnly && some ? setTimeout(done, 30) : null;
      function done() {
        clearTimeout(timer);
        clearTimeout(quiet);
        pc.removeEventListener("icegatheringstatechange", check);
        pc.removeEventListener("icecandidate", onCand);
        resolve();
      }
      function check() { if (pc.iceGatheringState === "complete") done(); }
      function onCand(e) {
        if (!e.candidate) { done(); return; }
        if (hostOnly) { clearTimeout(quiet); quiet = setTimeout(done, 30); }
      }
      pc.addEventListener("icegatheringstatechange", check);
      pc.addEventListener("icecandidate", onCand);
    });
  }

  _sendIce(room, candidate) {
    this.iceSent = (this.iceSent || 0) + 1;
    this.request("ice", {room, candidate}).catch((err) => {
      // A server without the optional `ice` op: later offers wait for gathering instead.
      if (err.code === "unknown_op") this._noTrickle = true;
    });
  }

  _peerFor() {
    const servers = this.iceServers || this._serverIce || [];
    // Never a default public STUN server: the server tells us its own (or none).
    return new RTCPeerConnection({iceServers: servers});
  }
}

export default Souk;
