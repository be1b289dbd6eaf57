"""The scenarios, by the name the command line uses."""

from __future__ import annotations

from loadtest.run import Scenario
from loadtest.scenarios.chat import ChatScenario
from loadtest.scenarios.draw import DrawScenario
from loadtest.scenarios.events import EventsScenario
from loadtest.scenarios.flashsale import FlashSaleScenario
from loadtest.scenarios.groupbuy import GroupBuyScenario
from loadtest.scenarios.join import JoinScenario
from loadtest.scenarios.media import MediaScenario
from loadtest.scenarios.mirror import MirrorScenario
from loadtest.scenarios.mixed import MixedScenario

SCENARIOS: dict[str, type[Scenario]] = {
    s.name: s
    for s in (JoinScenario, EventsScenario, ChatScenario, FlashSaleScenario, GroupBuyScenario,
              MirrorScenario, MediaScenario, MixedScenario, DrawScenario)
}

__all__ = ["SCENARIOS"]
