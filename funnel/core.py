"""`Funnel`: normalise → keywords + patterns → embedding similarity → score → decide.

Built once per policy-set version (`Funnel.build`); `score_batch` is the hot path. The
embedding model is loaded once per process and shared between builds (embed.load_embedder),
compiled Hyperscan databases are cached (hs.py), so a policy reload costs well under a second.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from funnel.embed import DEFAULT_MODEL_DIR, ExemplarIndex, StaticEmbedder, load_embedder
from funnel.heads import SIGNALS, Features, HeadSet, model_sha256
from funnel.keywords import KeywordStage, evidence_counts
from funnel.language import (
    LanguageConfig,
    LanguageRouter,
    PostRoute,
    load_detector,
    route_candidates,
    validate_rules,
)
from funnel.normalise import Normalised, normalise
from funnel.patterns import PatternStage
from funnel.score import DEFAULT_WEIGHTS, Weights, combine, embedding_evidence, lexical_evidence
from funnel.spec import FunnelResult, PolicySpec, RoundedScores

FloatMatrix = npt.NDArray[np.float32]
# Languages the funnel reads alone (English) and no project-level overrides.
DEFAULT_LANGUAGES = LanguageConfig()


class Funnel:
    """Safe to call from one thread at a time; a lock serialises concurrent callers."""

    def __init__(
        self,
        policies: Sequence[PolicySpec],
        *,
        embedder: StaticEmbedder | None = None,
        engine: str = "auto",
        weights: Weights = DEFAULT_WEIGHTS,
        heads: HeadSet | None = None,
        languages: LanguageConfig | None = None,
    ) -> None:
        ids = [p.id for p in policies]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate policy ids in {ids}")
        self.policies = tuple(policies)
        self.policy_ids = ids
        self.weights = weights
        self._column = {pid: i for i, pid in enumerate(ids)}
        self.keywords = KeywordStage(self.policies, engine)
        self.patterns = PatternStage(self.policies, engine)
        self.embedder = embedder
        self.exemplars: ExemplarIndex | None = None
        if embedder is not None:
            # Exemplars go through the same normaliser as posts, so both meet in `words` form.
            groups = [(p.id, [normalise(x).words for x in p.exemplars]) for p in self.policies]
            self.exemplars = ExemplarIndex(embedder, groups)
            self._exemplar_columns = np.array([self._column[pid] for pid in self.exemplars.policy_ids], dtype=np.int64)
        self._thresholds = np.array([p.threshold for p in self.policies], dtype=np.float32)
        self._very_sure = np.maximum(self._thresholds, np.array([p.very_sure for p in self.policies], np.float32))
        self.heads: HeadSet | None = None
        # Policies whose fitted head no longer fits (funnel block or model changed): scored the old way.
        self.stale_heads: list[str] = []
        # Policies with a head whose fit chose today's scoring (HeadSet.scorers): scored the old way, by design.
        self.kept_scoring: list[str] = []
        self._head_columns: list[int] = []
        self._head_index: list[int] = []
        if heads is not None and len(heads.policy_ids):
            self._attach_heads(heads)
        # Language step (funnel/language.py): None = every post is screened by the funnel alone.
        self.router: LanguageRouter | None = None
        if languages is not None:
            rules = [validate_rules(dict(p.languages), f"policy {p.id!r} languages") for p in self.policies]
            self.router = LanguageRouter(rules, languages, load_detector())
        self._lock = threading.Lock()

    def _attach_heads(self, heads: HeadSet) -> None:
        """Use each policy's head when the fit chose it (`HeadSet.scorers`) and it was fitted for
        this funnel block and this embedding model; list those that no longer fit in
        `stale_heads` (the caller warns and counts them) and those the fit did not choose in
        `kept_scoring` (today's score and calibrated threshold, as without heads)."""
        index = {pid: i for i, pid in enumerate(heads.policy_ids)}
        same_model = self.embedder is not None and heads.model_sha256 == model_sha256(self.embedder.model_dir)
        for spec in self.policies:
            i = index.get(spec.id)
            if i is None:
                continue
            if not heads.uses_head(spec.id):
                self.kept_scoring.append(spec.id)
                continue
            if not same_model or heads.fingerprints[i] != spec.fingerprint():
                self.stale_heads.append(spec.id)
                continue
            column = self._column[spec.id]
            self._head_columns.append(column)
            self._head_index.append(i)
            self._thresholds[column] = heads.thresholds[i]
            self._very_sure[column] = max(float(heads.thresholds[i]), self.policies[column].very_sure)
        if self._head_columns:
            self.heads = heads

    @property
    def fit_id(self) -> str | None:
        """The fit (heads file) this funnel scores with, None without heads in use."""
        return self.heads.fit_id if self.heads is not None else None

    @property
    def thresholds(self) -> FloatMatrix:
        """The operating thresholds in `policy_ids` order (a head's own where one is in use)."""
        return self._thresholds.copy()

    @property
    def headed_policies(self) -> list[str]:
        return [self.policy_ids[c] for c in self._head_columns]

    @classmethod
    def build(
        cls,
        policies: Sequence[PolicySpec],
        *,
        model_dir: Path | None = DEFAULT_MODEL_DIR,
        engine: str = "auto",
        weights: Weights = DEFAULT_WEIGHTS,
        heads: HeadSet | None = None,
        languages: LanguageConfig | None = DEFAULT_LANGUAGES,
    ) -> Funnel:
        """`model_dir=None` turns the embedding stage off (keywords and patterns only, and no
        heads: they read the embedding). `heads` (heads.load_heads(policies_dir)) replace
        today's score for the policies they were fitted for."""
        embedder = load_embedder(Path(model_dir)) if model_dir is not None else None
        return cls(policies, embedder=embedder, engine=engine, weights=weights, heads=heads, languages=languages)

    def describe(self) -> dict[str, Any]:
        """What was built, for logs and `/status`."""
        return {
            "policies": self.policy_ids,
            "keyword_engine": self.keywords.engine,
            "keyword_literals": len(self.keywords.literals),
            "pattern_engine": self.patterns.engine,
            "patterns": len(self.patterns.patterns),
            "embedding_model": str(self.embedder.model_dir) if self.embedder else None,
            "heads": self.headed_policies,
            "stale_heads": self.stale_heads,
            "kept_scoring": self.kept_scoring,
            "fit_id": self.fit_id,
        }

    def score(self, text: str) -> FunnelResult:
        return self.score_batch([text])[0]

    def score_batch(self, texts: Sequence[str], langs: Sequence[str | None] | None = None) -> list[FunnelResult]:
        """`langs`: the producers' language tags (`Post.lang`), which win over detection."""
        with self._lock:
            scored = self._score([normalise(t) for t in texts])
            routes = self.router.route_batch(texts, langs) if self.router is not None else None
        return self._results(scored, routes)

    def score_matrix(self, texts: Sequence[str]) -> FloatMatrix:
        """(posts, policies) scores in `policy_ids` order, without building results (calibration)."""
        with self._lock:
            return self._score([normalise(t) for t in texts]).scores

    def features(self, texts: Sequence[str]) -> tuple[Features, FloatMatrix]:
        """What a head reads for each post, and today's scores (without heads): for `fit`.
        Needs the embedding stage."""
        with self._lock:
            scored = self._score([normalise(t) for t in texts], need_features=True)
        assert scored.features is not None
        return scored.features, scored.features.signals[:, :, len(SIGNALS) - 1].copy()

    def _score(self, posts: list[Normalised], need_features: bool = False) -> _Scored:
        n, p = len(posts), len(self.policy_ids)
        lexical = np.zeros((n, p), dtype=np.float32)
        # words, phrases, patterns hit counts per (post, policy): the heads read them.
        counts3 = np.zeros((n, p, 3), dtype=np.float32)
        signals: list[dict[str, list[str]]] = [{} for _ in posts]
        keyword_hits = self.keywords.match_batch(posts)
        pattern_hits = self.patterns.match_batch(posts)
        for row, (hits, patterns) in enumerate(zip(keyword_hits, pattern_hits, strict=True)):
            if not hits and not patterns:
                continue
            fired = signals[row]
            for hit in hits:
                fired.setdefault(hit.policy_id, []).append(f"keyword:{hit.keyword}")
            n_patterns: dict[str, int] = {}
            for policy_id, pattern in patterns:
                n_patterns[policy_id] = n_patterns.get(policy_id, 0) + 1
                fired.setdefault(policy_id, []).append(f"pattern:{pattern}")
            counts = evidence_counts(hits)
            for policy_id in counts.keys() | n_patterns.keys():
                words, phrases = counts.get(policy_id, (0, 0))
                column = self._column[policy_id]
                pattern_count = n_patterns.get(policy_id, 0)
                lexical[row, column] = lexical_evidence(words, phrases, pattern_count, self.weights)
                counts3[row, column] = (words, phrases, pattern_count)
        if self.exemplars is None or not self.exemplars.policy_ids or n == 0:
            if need_features:
                raise ValueError("the heads' features need the embedding stage (and policies with exemplars)")
            return _Scored(lexical, signals, lexical, None)
        assert self.embedder is not None
        vectors = self.embedder.encode([p.words for p in posts])
        similarity = np.zeros((n, p), dtype=np.float32)
        similarity[:, self._exemplar_columns] = self.exemplars.similarity(vectors, self.weights.centroid_weight)
        evidence = np.zeros((n, p), dtype=np.float32)
        evidence[:, self._exemplar_columns] = embedding_evidence(similarity[:, self._exemplar_columns], self.weights)
        scores = combine(lexical, evidence)
        features: Features | None = None
        if need_features or self.heads is not None:
            raw = np.concatenate([similarity[:, :, None], counts3, scores[:, :, None]], axis=2)
            features = Features(vectors, raw)
        if self.heads is not None and not need_features:
            assert features is not None
            scores[:, self._head_columns] = self.heads.probabilities(features, self._head_columns, self._head_index)
        return _Scored(scores, signals, lexical, (similarity, evidence), features)

    def _results(self, scored: _Scored, routes: Sequence[PostRoute] | None = None) -> list[FunnelResult]:
        """One result per post; `routes` (the language step's, one per post) applied when given."""
        scores, signals = scored.scores, scored.signals
        candidate = (scores >= self._thresholds) & (scores > 0.0)
        very_sure = candidate & (scores >= self._very_sure)
        ids = self.policy_ids
        n = len(signals)
        # Few posts are candidates: walk the non-zero cells once instead of testing every row.
        chosen: list[list[str]] = [[] for _ in range(n)]
        for row, col in zip(*(a.tolist() for a in np.nonzero(candidate)), strict=True):
            chosen[row].append(ids[col])
        sure: list[list[str]] = [[] for _ in range(n)]
        for row, col in zip(*(a.tolist() for a in np.nonzero(very_sure)), strict=True):
            sure[row].append(ids[col])
        if scored.embedding is not None:
            similarity, evidence = scored.embedding
            # The embedding signal is named where it matters: for candidates, next to a lexical
            # hit, or when it is strong on its own; a faint similarity to everything is not news.
            named = (evidence > 0.0) & (candidate | (scored.lexical > 0.0) | (evidence >= 0.5))
            if self._head_columns:
                for row, col in zip(*(a.tolist() for a in np.nonzero(candidate[:, self._head_columns])), strict=True):
                    column = self._head_columns[col]
                    signals[row].setdefault(ids[column], []).append(f"head:{scores[row, column]:.2f}")
            for row, col in zip(*(a.tolist() for a in np.nonzero(named)), strict=True):
                signals[row].setdefault(ids[col], []).append(f"embedding:{similarity[row, col]:.2f}")
        # float64 before rounding: float32 values print as 0.31040000915527344 in JSON.
        rounded = np.round(scores.astype(np.float64), 4).tolist()
        if routes is None:
            return [
                FunnelResult(
                    candidates=chosen[row],
                    scores=RoundedScores(zip(ids, rounded[row], strict=True)),
                    signals=signals[row],
                    very_sure=sure[row],
                )
                for row in range(n)
            ]
        results: list[FunnelResult] = []
        for row, route in enumerate(routes):
            candidates, very_sure_ids = route_candidates(chosen[row], sure[row], signals[row], route, ids)
            results.append(
                FunnelResult(
                    candidates=candidates,
                    scores=RoundedScores(zip(ids, rounded[row], strict=True)),
                    signals=signals[row],
                    very_sure=very_sure_ids,
                    lang=route.lang,
                    route=route.route,
                )
            )
        return results


@dataclass(frozen=True, slots=True)
class _Scored:
    scores: FloatMatrix
    signals: list[dict[str, list[str]]]
    lexical: FloatMatrix
    # (similarity, evidence), both (posts, policies); None without an embedding stage.
    embedding: tuple[FloatMatrix, FloatMatrix] | None
    # What the heads read (raw counts when asked for by `features`); None when unused.
    features: Features | None = None
