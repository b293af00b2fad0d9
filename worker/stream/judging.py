"""The judges as the stream sees them: each call counted (sensors) and noted on the judge-uptime
clock (deadline.py), bundled as the cascade's `Judges`; and whether a judge tier is down."""

from __future__ import annotations

from collections.abc import Sequence

from worker.cascade.pipeline import Judges
from worker.config import EscalationSettings
from worker.contracts import Post
from worker.judges.client import JudgeCall, JudgeClient
from worker.ops.sensors import Sensors
from worker.policies.files import Policy
from worker.stream.deadline import JudgeUptimeClock


class StreamJudges:
    def __init__(
        self,
        t1: JudgeClient,
        t2: JudgeClient,
        sensors: Sensors,
        clock: JudgeUptimeClock,
        rules: EscalationSettings,
        multi_policy: bool,
        public_rationale: bool = False,
    ) -> None:
        self.t1 = t1
        self.t2 = t2
        self.sensors = sensors
        self.clock = clock
        self.judges = Judges(
            t1=self._judge_t1,
            t2=self._judge_t2,
            rules=rules,
            t1_many=self._judge_many_t1 if multi_policy else None,
            t2_many=self._judge_many_t2 if multi_policy else None,
            public_rationale=public_rationale,
        )

    def down(self) -> bool:
        """A judge tier that is down (every endpoint's breaker open) is not a verdict: posts wait."""
        return not (self.t1.available() and self.t2.available())

    async def _judge_t1(self, policy: Policy, post: Post) -> JudgeCall:
        return self._counted([await self.t1.judge(policy, post)])[0]

    async def _judge_t2(self, policy: Policy, post: Post) -> JudgeCall:
        return self._counted([await self.t2.judge(policy, post)])[0]

    async def _judge_many_t1(self, policies: Sequence[Policy], post: Post) -> list[JudgeCall]:
        return self._counted(await self.t1.judge_many(policies, post))

    async def _judge_many_t2(self, policies: Sequence[Policy], post: Post) -> list[JudgeCall]:
        return self._counted(await self.t2.judge_many(policies, post))

    def _counted(self, calls: list[JudgeCall]) -> list[JudgeCall]:
        self.sensors.on_judge_calls(calls)
        for _ in calls:
            self.clock.note_answer()
        return calls
