"""The funnel: a cheap prefilter that decides which posts a judge should see, per policy.

Usable on its own (no Kafka): build a `Funnel` from `PolicySpec`s and call `score_batch`.

    from funnel import Funnel, PolicySpec, load_thresholds, specs_from_hints
    specs = specs_from_hints([(p.id, p.meta.funnel.model_dump()) for p in policy_set.policies],
                             thresholds=load_thresholds(policy_dir))
    funnel = Funnel.build(specs)
    results = funnel.score_batch(["free v-bucks at bit.ly/x", "kill the process"])
"""

from funnel.calibrate import SIDECAR_NAME, load_sidecar, load_thresholds, stale_policies
from funnel.core import Funnel
from funnel.embed import DEFAULT_MODEL_DIR
from funnel.language import LanguageConfig
from funnel.normalise import Normalised, normalise
from funnel.score import Weights
from funnel.spec import FunnelResult, PolicySpec, spec_from_hints, specs_from_hints

__all__ = [
    "DEFAULT_MODEL_DIR",
    "SIDECAR_NAME",
    "Funnel",
    "FunnelResult",
    "LanguageConfig",
    "Normalised",
    "PolicySpec",
    "Weights",
    "load_sidecar",
    "load_thresholds",
    "normalise",
    "spec_from_hints",
    "specs_from_hints",
    "stale_policies",
]
