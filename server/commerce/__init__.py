"""Commerce adapter: the asyncio layer the gateway calls for products, flash sales, team buys.

Why this split: the rules (server.domain.flashsale / teambuy / catalog) are pure; this package
owns everything with time and I/O around them: the clock, timers (scheduled start, end, team
deadlines, 100 ms coalescing of progress pushes), the durable store and the bus. Callers hold
one `Commerce`; its parts are small modules named after what they hold:

- `adapter`: `Commerce`, the wiring, the lifecycle (recovery, drain) and the room snapshot
- `products`: the catalog and product writes
- `sales`: flash sales, the `buy` hot path and its batched durable writes
- `teams`: team-buy offers and teams, their writes and deadlines
- `writes`: waiting for a durable write; the store's refusals as protocol errors
- `cluster`: following other nodes' changes; `absent`: the memo of ids the store lacked
- `plumbing`: clock, ids, named timers, tasks that outlive their caller, the bus

Results are plain dicts ready for the wire. `buy` returns the order; `team_open`/`team_join`
return `{"team": ..., "order": ...}`; every refusal is a `SoukError` with a protocol code.
"""

from server.commerce.absent import ABSENT_MS
from server.commerce.adapter import Commerce
from server.commerce.cluster import ROOM_SYNC_MS
from server.commerce.plumbing import new_id, wall_ms
from server.commerce.sales import MAX_SNAPSHOT_SALES
from server.commerce.teams import MAX_VIEW_TEAMS
from server.commerce.writes import REFUSALS

__all__ = [
    "ABSENT_MS",
    "MAX_SNAPSHOT_SALES",
    "MAX_VIEW_TEAMS",
    "REFUSALS",
    "ROOM_SYNC_MS",
    "Commerce",
    "new_id",
    "wall_ms",
]
