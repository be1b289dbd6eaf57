"""Insights: the merchant's numbers (docs/engagement.md, "The merchant's numbers").

Why a part of its own: the numbers read every feature's records and the activity log, and no
feature decides anything from them but the member layers, which ask `Insights` for a
member's stats. Its parts:

- `adapter`: `Insights`, the reads (flushing the log first), the shops' excluded users
- `activity`: `ActivityLog`, views, chat, likes, presence samples and the merchant's actions
  noted in memory and written in one batch about once a second

The queries are server/store/insights.py; their arithmetic is server/domain/insights.py.
"""

from server.insights.activity import STAFF_ROLES, ActivityLog
from server.insights.adapter import Insights

__all__ = ["STAFF_ROLES", "ActivityLog", "Insights"]
