"""The funnel: a cheap prefilter that decides which posts a judge should see, per policy.

Usable on its own (no Kafka): build a `Funnel` from `PolicySpec`s and call `score_batch`.
"""

from funnel.core import Funnel, FunnelResult, PolicySpec

__all__ = ["Funnel", "FunnelResult", "PolicySpec"]
