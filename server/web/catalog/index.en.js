// Every string of the start page (/), in English.
import common from "/static/catalog/common.en.js";

export default {
  ...common,
  tagline: "live commerce",
  "hero.title": "Sell live, keep your buyers close",
  "hero.text": "A demo shop is running: open the studio and a live room side by side. Each page takes its pass from ?token=; in demo mode it gets one by itself.",
  "live.name": "Live room",
  "live.text": "What shoppers see on their phone: the video, chat, hearts, flash sales, team buys, questions.",
  "studio.name": "Studio",
  "studio.text": "For the streamer: camera, go live, stream health, products, sales, the question queue, moderation.",
  "group.name": "Community group",
  "group.text": "Fans between lives: chat, notices, questions from the live answered in the group.",
  "dash.name": "Numbers",
  "dash.text": "For the merchant: viewers, conversion, revenue, group retention.",
  "embed.title": "Embed the browser SDK",
  "embed.text": "Your own pages talk to Souk with one ES module, served at /sdk/souk.js.",
};
