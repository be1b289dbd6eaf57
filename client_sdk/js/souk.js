// Souk browser SDK: one ES module, no build step.
//
//   import {Souk} from "/sdk/souk.js";
//   const souk = new Souk("ws://host:8080/ws", token);
//   await souk.connect();
//   souk.on("chat", (ev) => console.log(ev.name, ev.text));
//   const snapshot = await souk.join("demo");
//   await souk.chat("demo", "hello");
//
// It mirrors the Python SDK (client_sdk/client.py): one websocket, requests matched to replies
// by `rid`, typed errors (`err.code`), and reconnection as the SDK's job: after a drop it
// reconnects with exponential backoff, authenticates again and sends `resume` with the last
// `seq` and `epoch` of every channel, so the page misses nothing the server's history still
// holds and sees nothing twice. A hole in `seq` triggers the same resume without a reconnect.
// JSON frames (`souk.v1.json`): browsers have no msgpack built in, and the server answers in
// the encoding the client chose.

export const SUBPROTOCOL_JSON = "souk.v1.json";

/** Close codes the server uses (client_sdk/protocol.py `Close`). */
export const Close = Object.freeze({
  NORMAL: 1000, POLICY: 1008, TOO_BIG: 1009, RESTARTING: 1012,
  AUTH_TIMEOUT: 4401, KICKED: 4403, SLOW_CONSUMER: 4408,
});

/** Close codes after which reconnecting cannot help (the server will refuse again). */
const FINAL_CLOSES = new Set([Close.POLICY, Close.KICKED]);

/** An `error` reply, or a local failure (`connection_lost`, `timeout`), with a stable code. */
export class SoukError extends Error {
  constructor(code, message, frame = null) {
    super(message || code);
    this.name = "SoukError";
    this.code = code;
    this.frame = frame;
  }
}

function newKey() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID().replace(/-/g, "");
  return `${Date.now().toString(36)}${Math.random().toString(36).slice(2)}`;
}

function clean(fields) {
  const out = {};
  for (const [k, v] of Object.entries(fields)) if (v !== undefined && v !== null) out[k] = v;
  return out;
}

/** The page's websocket URL: same host and scheme as the page (ws: or wss:). */
export function defaultUrl(loc = globalThis.location) {
  return `${loc.protocol === "https:" ? "wss:" : "ws:"}//${loc.host}/ws`;
}

/**
 * A token for this page: `?token=` if present, else (demo mode) one from
 * `/api/demo/token?role=&room=`. Throws a SoukError when neither is available.
 */
export async function pageToken({role = "viewer", room = "demo", name} = {}) {
  const params = new URLSearchParams(globalThis.location.search);
  const given = params.get("token");
  if (given) return given;
  const q = new URLSearchParams({role, room});
  if (name || params.get("name")) q.set("name", name || params.get("name"));
  const res = await fetch(`/api/demo/token?${q}`);
  const body = await res.json().catch(() => ({}));
  if (!res.ok || !body.token) {
    throw new SoukError(body.error || "unauthorized",
      body.message || "no ?token= in the URL and the server is not in demo mode");
  }
  return body.token;
}

export class Souk {
  /**
   * @param {string} url  websocket URL (`ws://host:port/ws`); defaults to the page's host
   * @param {string} token  a Souk JWT
   * @param {object} opts  reconnect (true), backoff [ms min, ms max] ([100, 5000]),
   *   requestTimeout ms (15000), iceServers (override the server's), trickle (false),
   *   iceGatherTimeout ms (2000)
   */
  constructor(url, token, opts = {}) {
    this.url = url || defaultUrl();
    this.token = token;
    this.reconnect = opts.reconnect !== false;
    this.backoff = opts.backoff || [100, 5000];
    this.requestTimeout = opts.requestTimeout || 15000;
    this.iceServers = opts.iceServers || null; // learnt from publish/watch replies otherwise
    this.trickle = !!opts.trickle;
    this.iceGatherTimeout = opts.iceGatherTimeout || 2000;
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
    this._media = new Map(); // "publish:<room>" | "watch:<room>" -> {pc, ...}
  }

  // ---- events --------------------------------------------------------------------------
  /**
   * Listen to events of one `type` (`chat`, `sale`, `question`, ...) or `"*"` for all.
   * Connection life is reported as type `connection` ({state, code?, reason?}), server
   * error frames without a rid as type `error`. Returns a function that removes the listener.
   */
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

  // ---- lifecycle -----------------------------------------------------------------------
  /** Open the socket and authenticate; resolves with the server's `user`. */
  async connect() {
    this._closed = false;
    this._setState("connecting");
    await this._open();
    const user = await this._authenticate();
    this._setState("open");
    return user;
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
      this._setState("closed", {code: e.code, reason: e.reason});
      return;
    }
    this._setState("reconnecting", {code: e.code, reason: e.reason});
    this._reconnectLoop();
  }

  async _reconnectLoop() {
    let delay = this.backoff[0];
    while (!this._closed) {
      await new Promise((r) => setTimeout(r, delay * (0.5 + Math.random())));
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
        this._setState("open", {reconnected: true});
        this._rewatch();
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

  /** Chat in a room, or in a group with `{group}`; `replyTo` answers a message. */
  async chat(room, text, {group, replyTo} = {}) {
    const reply = await this.request("chat", {...(group ? {group} : {room}), text, reply_to: replyTo});
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
  async salesStats(room) {
    const reply = await this.request("sales_stats", {room});
    return reply.stats || reply;
  }
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
  deleteMessage(where, message) { return this.request("delete_message", {...where, message}); }
  warn(where, user) { return this.request("warn", {...where, user}); }
  remove(where, user) { return this.request("remove", {...where, user}); }

  // ---- WebRTC (signalling over the same websocket) -------------------------------------
  _peer() {
    // Never a default public STUN server: the server tells us its own (or none).
    return new RTCPeerConnection({iceServers: this.iceServers || []});
  }

  async _gathered(pc) {
    if (pc.iceGatheringState === "complete") return;
    await new Promise((resolve) => {
      const timer = setTimeout(done, this.iceGatherTimeout);
      function done() {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        pc.removeEventListener("icecandidate", onCand);
        resolve();
      }
      function check() { if (pc.iceGatheringState === "complete") done(); }
      function onCand(e) { if (!e.candidate) done(); }
      pc.addEventListener("icegatheringstatechange", check);
      pc.addEventListener("icecandidate", onCand);
    });
  }

  /**
   * Offer/answer over the websocket. Full offers by default (wait for ICE gathering);
   * with `trickle`, the offer goes at once and candidates follow with the `ice` op.
   */
  async _negotiate(pc, op, room, trickle = this.trickle) {
    trickle = trickle && !this._noTrickle;
    const queued = [];
    let ready = false;
    if (trickle) {
      pc.addEventListener("icecandidate", (e) => {
        const c = e.candidate ? e.candidate.toJSON() : {candidate: "", sdpMid: "0", sdpMLineIndex: 0};
        if (ready) this._sendIce(room, c);
        else queued.push(c);
      });
    }
    await pc.setLocalDescription(await pc.createOffer());
    if (!trickle) await this._gathered(pc);
    const reply = await this.request(op, {room, sdp: pc.localDescription.sdp});
    if (Array.isArray(reply.ice_servers) && !this.iceServers) {
      // The server's STUN/TURN list applies from this peer on (and to the next connection).
      try { pc.setConfiguration({...pc.getConfiguration(), iceServers: reply.ice_servers}); } catch { /* fixed after gathering */ }
      this._serverIce = reply.ice_servers;
    }
    await pc.setRemoteDescription({type: "answer", sdp: reply.sdp});
    ready = true;
    for (const c of queued.splice(0)) this._sendIce(room, c);
    return reply;
  }

  _sendIce(room, candidate) {
    this.iceSent = (this.iceSent || 0) + 1;
    this.request("ice", {room, candidate}).catch((err) => {
      // A server without the optional `ice` op: later offers wait for gathering instead.
      if (err.code === "unknown_op") this._noTrickle = true;
    });
  }

  /** Publish a MediaStream (camera + mic) to `room`; resolves with the RTCPeerConnection. */
  async publish(stream, room, {trickle = this.trickle} = {}) {
    const key = `publish:${room}`;
    this._stopMedia(key);
    const pc = this._peerFor();
    for (const track of stream.getTracks()) pc.addTransceiver(track, {direction: "sendonly", streams: [stream]});
    this._media.set(key, {pc, room, kind: "publish", stream});
    try {
      await this._negotiate(pc, "publish", room, trickle);
    } catch (err) {
      this._stopMedia(key);
      throw err;
    }
    return pc;
  }

  async unpublish(room) {
    this._stopMedia(`publish:${room}`);
    return this.request("unpublish", {room});
  }

  /**
   * Watch `room` in a <video> element (recvonly offer). Resolves with the
   * RTCPeerConnection once the answer is applied; the video plays when media arrives.
   */
  async watch(video, room, {trickle = this.trickle} = {}) {
    const key = `watch:${room}`;
    this._stopMedia(key);
    const pc = this._peerFor();
    pc.addTransceiver("video", {direction: "recvonly"});
    pc.addTransceiver("audio", {direction: "recvonly"});
    const stream = new MediaStream();
    pc.addEventListener("track", (e) => {
      stream.addTrack(e.track);
      if (video.srcObject !== stream) video.srcObject = stream;
      const played = video.play();
      if (played && played.catch) played.catch(() => { video.muted = true; video.play().catch(() => {}); });
    });
    this._media.set(key, {pc, room, kind: "watch", video, trickle});
    try {
      await this._negotiate(pc, "watch", room, trickle);
    } catch (err) {
      this._stopMedia(key);
      throw err;
    }
    return pc;
  }

  async unwatch(room) {
    this._stopMedia(`watch:${room}`);
    return this.request("unwatch", {room});
  }

  ice(room, candidate) { return this.request("ice", {room, candidate}); }

  _peerFor() {
    if (!this.iceServers && this._serverIce) return new RTCPeerConnection({iceServers: this._serverIce});
    return this._peer();
  }

  _stopMedia(key) {
    const m = this._media.get(key);
    if (!m) return;
    this._media.delete(key);
    try { m.pc.close(); } catch { /* already closed */ }
  }

  /** After a reconnect the server has dropped our media sessions: publish and watch again. */
  _rewatch() {
    for (const m of [...this._media.values()]) {
      if (m.kind === "watch") this.watch(m.video, m.room, {trickle: m.trickle}).catch(() => {});
      else if (m.kind === "publish") this.publish(m.stream, m.room).catch(() => {});
    }
  }
}

export default Souk;
