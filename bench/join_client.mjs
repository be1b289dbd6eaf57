// A minimal join client in another runtime, to keep the load-test suite honest.
//
// Usage: node bench/join_client.mjs PLAN.json  (bench/bench_joins.py writes the plan and
// installs `ws` into bench/node_modules when it is missing).
// The plan: {"url", "room", "offsets_ns": [...], "tokens": [...], "timeout_ms"}. Each viewer
// connects at start + its offset (open loop: latency counts from the scheduled time, not from
// when the timer fired), sends `auth`, then `join`, and its latency is taken at the `ok` to
// `join`. Frames are msgpack (souk.v1.msgpack), encoded and read by the few lines below.
// Prints one JSON line: {"count", "errors", "timeouts", "p50_ms", "p90_ms", "p99_ms", "max_ms"}.
//
// Why a bare `net` socket and not `new WebSocket()`: ws's client goes through Node's
// http.request for the upgrade, ~0.7 ms of CPU per connection here; a flash crowd of 900
// within 100 ms then measures the client, not the server. The upgrade is written by hand
// (and its Sec-WebSocket-Accept checked); frames are ws's own Sender and Receiver.
import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import { Receiver, Sender } from "ws";

const plan = JSON.parse(readFileSync(process.argv[2], "utf8"));
const enc = new TextEncoder();
const dec = new TextDecoder();

function packStr(s) {
  const b = enc.encode(s);
  if (b.length < 32) return [0xa0 | b.length, ...b];
  if (b.length < 256) return [0xd9, b.length, ...b];
  return [0xda, b.length >> 8, b.length & 0xff, ...b];
}

function packMap(obj) { // string keys; string or small non-negative integer values
  const out = [0x80 | Object.keys(obj).length];
  for (const [k, v] of Object.entries(obj)) {
    out.push(...packStr(k));
    if (typeof v === "string") out.push(...packStr(v));
    else if (v < 128) out.push(v);
    else out.push(0xcd, v >> 8, v & 0xff);
  }
  return Uint8Array.from(out);
}

function unpack(buf) { // enough of msgpack to read a reply
  let i = 0;
  const str = (n) => { const s = dec.decode(buf.subarray(i, i + n)); i += n; return s; };
  const u = (n) => { let v = 0; for (let k = 0; k < n; k++) v = v * 256 + buf[i++]; return v; };
  const items = (n, map) => {
    if (!map) { const a = []; for (let k = 0; k < n; k++) a.push(read()); return a; }
    const o = {}; for (let k = 0; k < n; k++) { const key = read(); o[key] = read(); } return o;
  };
  function read() {
    const t = buf[i++];
    if (t < 0x80) return t;
    if (t < 0x90) return items(t & 0x0f, true);
    if (t < 0xa0) return items(t & 0x0f, false);
    if (t < 0xc0) return str(t & 0x1f);
    if (t >= 0xe0) return t - 256;
    switch (t) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: { const n = u(1); i += n; return null; }
      case 0xc5: { const n = u(2); i += n; return null; }
      case 0xc6: { const n = u(4); i += n; return null; }
      case 0xca: { const v = new DataView(buf.buffer, buf.byteOffset + i, 4).getFloat32(0); i += 4; return v; }
      case 0xcb: { const v = new DataView(buf.buffer, buf.byteOffset + i, 8).getFloat64(0); i += 8; return v; }
      case 0xcc: return u(1);
      case 0xcd: return u(2);
      case 0xce: return u(4);
      case 0xcf: return u(8);
      case 0xd0: return u(1) - (buf[i - 1] > 127 ? 256 : 0);
      case 0xd1: { const v = u(2); return v > 32767 ? v - 65536 : v; }
      case 0xd2: { const v = u(4); return v > 2147483647 ? v - 4294967296 : v; }
      case 0xd3: return Number(new DataView(buf.buffer, buf.byteOffset + (i += 8) - 8, 8).getBigInt64(0));
      case 0xd9: return str(u(1));
      case 0xda: return str(u(2));
      case 0xdb: return str(u(4));
      case 0xdc: return items(u(2), false);
      case 0xdd: return items(u(4), false);
      case 0xde: return items(u(2), true);
      case 0xdf: return items(u(4), true);
      default: throw new Error(`msgpack type 0x${t.toString(16)}`);
    }
  }
  return read();
}

const latencies = [];
let errors = 0;
let timeouts = 0;
let pending = plan.offsets_ns.length;
const sockets = [];
const start = process.hrtime.bigint() + 200_000_000n;

function done() {
  pending -= 1;
  if (pending > 0) return;
  latencies.sort((a, b) => a - b);
  const pct = (p) => latencies.length ? latencies[Math.min(latencies.length - 1, Math.ceil(p / 100 * latencies.length) - 1)] : null;
  console.log(JSON.stringify({ count: latencies.length, errors, timeouts, p50_ms: pct(50), p90_ms: pct(90),
                               p99_ms: pct(99), max_ms: latencies.length ? latencies[latencies.length - 1] : null }));
  for (const sock of sockets) sock.destroy();
  process.exit(0);
}

const target = new URL(plan.url);
const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

function frame(obj) {
  return Buffer.concat(Sender.frame(Buffer.from(packMap(obj)), {
    fin: true, rsv1: false, opcode: 2, mask: true, readOnly: false,
  }));
}

function viewer(index) {
  const due = start + BigInt(plan.offsets_ns[index]);
  let finished = false;
  const finish = (ok) => {
    if (finished) return;
    finished = true;
    if (ok) latencies.push(Number(process.hrtime.bigint() - due) / 1e6);
    done();
  };
  const key = randomBytes(16).toString("base64");
  const accept = createHash("sha1").update(key + GUID).digest("base64");
  const sock = connect({ host: target.hostname, port: Number(target.port), noDelay: true });
  sockets.push(sock);
  const timer = setTimeout(() => { timeouts += 1; finish(false); }, plan.timeout_ms);
  const fail = () => { if (!finished) { errors += 1; clearTimeout(timer); finish(false); } };
  const receiver = new Receiver({ binaryType: "nodebuffer", isServer: false, skipUTF8Validation: true });
  receiver.on("message", (data) => {
    const reply = unpack(data);
    if (reply.op === "error") { fail(); return; }
    if (reply.op !== "ok") return;
    if (reply.rid === 1) sock.write(frame({ op: "join", rid: 2, room: plan.room }));
    else if (reply.rid === 2) { clearTimeout(timer); finish(true); }
  });
  receiver.on("error", fail);
  let head = Buffer.alloc(0);
  sock.on("connect", () => sock.write(
    `GET ${target.pathname} HTTP/1.1\r\nHost: ${target.host}\r\nUpgrade: websocket\r\n` +
    `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
    `Sec-WebSocket-Protocol: souk.v1.msgpack\r\n\r\n`));
  sock.on("data", (chunk) => {
    if (head === null) { receiver.write(chunk); return; }
    head = Buffer.concat([head, chunk]);
    const end = head.indexOf("\r\n\r\n");
    if (end < 0) return;
    const text = head.subarray(0, end).toString("latin1");
    if (!text.startsWith("HTTP/1.1 101") || !text.includes(`Sec-WebSocket-Accept: ${accept}`)) { fail(); return; }
    const rest = head.subarray(end + 4);
    head = null;
    sock.write(frame({ op: "auth", rid: 1, token: plan.tokens[index] }));
    if (rest.length) receiver.write(rest);
  });
  sock.on("error", fail);
  sock.on("close", fail);
}

plan.offsets_ns.forEach((off, index) => {
  const delayMs = Number(start + BigInt(off) - process.hrtime.bigint()) / 1e6;
  setTimeout(() => viewer(index), Math.max(0, delayMs));
});
