// 回放页 (/replay/<room>) 的全部文字，中文。
import common from "/static/catalog/common.zh.js";

export default {
  ...common,
  "replay.title": "直播回放",
  "replay.sub": "往期直播 · 点商品跳到讲解",
  "replay.none": "这个直播间还没有回放",
  "replay.chapters": "本场讲解的商品",
  "replay.noChapters": "本场没有讲解商品",
  "replay.product": "商品",
  "replay.kind.pin": "讲解",
  "replay.kind.sale": "秒杀",
  "replay.buy": "购买",
  "replay.team": "拼团",
  "replay.bought": "已下单，可在“我的订单”查看",
  "replay.teamOpened": "已开团，邀请好友一起拼",
};
