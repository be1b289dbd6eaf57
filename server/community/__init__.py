"""The asyncio adapter for Q&A, community groups, mirroring and connectors.

The gateway calls `Community` for the ops `ask`, `upvote`, `answer`, `dismiss`,
`group_create`, `group_join`, `group_leave`, `group_members`, `link_groups`, `notice`,
`connector_create`, and after it accepted a group `chat` (`on_group_chat`). The rules live in
`server/domain/` (qa, community, mirror, moderation); this layer adds what they must not know:
the clock, ids, durability (every change is committed before its events are published, so
what a client saw survives a restart), the publish callback, the overdue timer and the
connectors (outbound delivery, inbound listener). See docs/community.md.

In a cluster (`--postgres`, server/store/community.py) the domain objects are this node's
working copy of a shared record: the writes that can race are guarded in SQL and a refusal
(`Stale`) makes this node adopt the committed row before it answers; after a commit the node
tells the others (`ClusterSync`, server/cluster/notices.py) and they update their copies; a
question, group or connector this node does not know is loaded before it says not_found. Only
the node that served an op publishes its events, mirrors a question and hands it to the
connectors, so each happens once per cluster. See docs/scaleout.md.

Why a package: one class had grown to do all of that. The modules, each named after what it
holds:

- adapter.py: `Community` itself: construction, dispatch of a client frame, life cycle,
  moderation, the overdue timer;
- frames.py: the op names (`OPS`) and the checks of a frame's fields;
- state.py: the state the parts share, declared once;
- qa.py: questions and answers, snapshots and stats;
- groups.py: groups, members, tags, links to rooms;
- notices.py: merchant notices;
- connectors.py: delivery, the inbound listener, dead letters (`ConnectorHub`);
- cluster.py: notices to and from other nodes, lazy loads, adopting after a stale write.
"""

from server.community.adapter import Community
from server.community.frames import OPS
from server.community.notices import MAX_NOTICE_CHARS, NOTICE_KINDS
from server.community.qa import MAX_MESSAGE_CHARS

__all__ = ["MAX_MESSAGE_CHARS", "MAX_NOTICE_CHARS", "NOTICE_KINDS", "OPS", "Community"]
