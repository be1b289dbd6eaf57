// Stream health for the streamer, from the browser's own getStats() on the publishing peer
// connection (whichever one the SDK uses now): outgoing video bitrate, frames per second and
// size as encoded, packet loss and round trip as the relay reports them back (RTCP), and the
// viewers receiving video when the server tells (`video_viewers` on the room's viewer count).
import {byTestId} from "/static/dom.js";
import {t} from "/static/i18n.js";

const EVERY_MS = 2000;

export class StreamHealth {
  constructor(souk, room) {
    this.souk = souk;
    this.room = room;
    this.prev = null; // {bytes, ts, sent, lost}
    this.videoViewers = null;
    const ch = `room:${room}`;
    const take = (ev) => {
      if (ev.ch !== undefined && ev.ch !== ch) return;
      if (typeof ev.video_viewers === "number") { this.videoViewers = ev.video_viewers; this.show("viewers", String(ev.video_viewers), ev.video_viewers); }
    };
    souk.on("viewers", take);
    this.take = take;
    setInterval(() => this.sample(), EVERY_MS);
  }

  show(what, text, value, bad = false) {
    const el = byTestId(`health-${what}`);
    el.textContent = text;
    el.dataset.value = value === null || value === undefined ? "" : String(value);
    el.parentElement.classList.toggle("bad", bad);
  }

  clear() {
    for (const what of ["bitrate", "fps", "size", "loss", "rtt"]) this.show(what, "–", null);
    this.prev = null;
  }

  async sample() {
    const pc = this.souk.mediaPeer("publish", this.room);
    const note = byTestId("health-note");
    if (!pc || this.souk.mediaState("publish", this.room) !== "connected") {
      this.clear();
      note.textContent = t("health.idle");
      return;
    }
    let out = null, remote = null;
    try {
      const report = await pc.getStats();
      report.forEach((s) => {
        if (s.type === "outbound-rtp" && s.kind === "video") out = s;
        else if (s.type === "remote-inbound-rtp" && s.kind === "video") remote = s;
      });
    } catch {
      return;
    }
    if (!out) return;
    const now = {bytes: out.bytesSent || 0, ts: out.timestamp, sent: out.packetsSent || 0, lost: remote ? remote.packetsLost || 0 : 0};
    // a new peer connection (a republish after a restart) starts its counters at 0: no delta
    if (this.prev && (pc !== this.prevPc || now.bytes < this.prev.bytes)) this.prev = null;
    this.prevPc = pc;
    if (this.prev && now.ts > this.prev.ts) {
      const kbps = Math.round(((now.bytes - this.prev.bytes) * 8) / (now.ts - this.prev.ts));
      this.show("bitrate", `${kbps} kbps`, kbps, kbps < 150);
      const sent = now.sent - this.prev.sent, lost = Math.max(0, now.lost - this.prev.lost);
      const loss = sent + lost > 0 ? (100 * lost) / (sent + lost) : 0;
      this.show("loss", `${loss.toFixed(1)} %`, loss, loss > 3);
    }
    this.prev = now;
    const fps = out.framesPerSecond;
    this.show("fps", fps ? String(Math.round(fps)) : "–", fps ?? null, fps !== undefined && fps < 12);
    this.show("size", out.frameWidth ? `${out.frameWidth}×${out.frameHeight}` : "–", out.frameHeight ?? null);
    const rtt = remote && remote.roundTripTime !== undefined ? Math.round(remote.roundTripTime * 1000) : null;
    this.show("rtt", rtt !== null ? `${rtt} ms` : "–", rtt, rtt !== null && rtt > 300);
    const limited = out.qualityLimitationReason && out.qualityLimitationReason !== "none";
    note.textContent = limited ? t(`health.limited.${out.qualityLimitationReason}`) : t("health.ok");
  }
}
