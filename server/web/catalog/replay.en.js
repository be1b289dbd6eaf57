// Every string of the replay page (/replay/<room>), in English.
import common from "/static/catalog/common.en.js";

export default {
  ...common,
  "replay.title": "Replays",
  "replay.sub": "Past lives · tap a product to see it shown",
  "replay.none": "No replays of this room yet",
  "replay.chapters": "Products in this live",
  "replay.noChapters": "No products were shown in this live",
  "replay.product": "Product",
  "replay.kind.pin": "shown",
  "replay.kind.sale": "flash sale",
  "replay.buy": "Buy",
  "replay.team": "Team buy",
  "replay.bought": "Ordered — see My orders",
  "replay.teamOpened": "Team opened — invite friends to fill it",
};
