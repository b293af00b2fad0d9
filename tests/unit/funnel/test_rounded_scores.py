"""`RoundedScores`: the funnel's scores are already what `round(v, 4)` gives, so an encoder may
pass them through (worker/cascade/cleared.py does) and publish the same bytes."""

from __future__ import annotations

import numpy as np
import orjson
from hypothesis import given
from hypothesis import strategies as st

from funnel import Funnel, PolicySpec
from funnel.spec import RoundedScores

SCORES = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False) | st.floats(min_value=0, max_value=1)


@given(st.lists(SCORES, min_size=1, max_size=50), st.sampled_from([np.float32, np.float64]))
def test_the_funnels_rounding_is_what_round_gives(values: list[float], dtype: type) -> None:
    # As Funnel._results rounds: float64 first, np.round to 4 places, then Python floats.
    rounded = np.round(np.asarray(values, dtype=dtype).astype(np.float64), 4).tolist()
    for value in rounded:
        assert round(value, 4) == value
        assert orjson.dumps(round(value, 4)) == orjson.dumps(value)  # -0.0 keeps its sign too


def test_funnel_results_carry_rounded_scores() -> None:
    funnel = Funnel.build([PolicySpec(id="spam", keywords=("free money",))], model_dir=None)
    results = funnel.score_batch(["free money here", "a walk in the park"], None)
    assert [type(r.scores) for r in results] == [RoundedScores, RoundedScores]
    assert results[0].scores["spam"] > 0
    # A dict subclass: JSON and equality as a plain dict.
    assert orjson.dumps(results[0].scores) == orjson.dumps(dict(results[0].scores))
