// Every string of the start page (/), in Chinese (zh-CN).
import common from "/static/catalog/common.zh.js";

export default {
  ...common,
  tagline: "直播电商",
  "hero.title": "边播边卖，把买家留在身边",
  "hero.text": "演示店铺已在运行：并排打开直播工作台和直播间试试。每个页面从 ?token= 获取凭证；演示模式下会自动获取。",
  "live.name": "直播间",
  "live.text": "买家在手机上看到的：视频、聊天、点赞、秒杀、拼团、提问。",
  "studio.name": "直播工作台",
  "studio.text": "给主播：摄像头、开播、推流状态、商品、活动、问题队列、管理聊天。",
  "group.name": "社群",
  "group.text": "两场直播之间的粉丝群：群聊、公告、在群里回答直播间的问题。",
  "dash.name": "经营数据",
  "dash.text": "给商家：观看、转化、销售额、社群留存。",
  "embed.title": "嵌入浏览器 SDK",
  "embed.text": "你自己的页面只需一个 ES 模块即可接入 Souk，地址 /sdk/souk.js。",
};
