"""Embedding stage: a static (model2vec) embedding model with numpy + tokenizers only.

The model is distilled once from all-MiniLM-L6-v2 (funnel/tools/distill.py) and shipped in
funnel/data/minilm_static/: one 256-dim float16 vector per WordPiece token. A post's
embedding is the normalised mean of its tokens' vectors, exactly what model2vec's
`StaticModel.encode` computes, but without importing model2vec (fewer dependencies, and
one `np.add.reduceat` per batch instead of a Python loop per post). No torch, no hub.

Static embeddings share a large common direction: any two posts sit at cosine 0.3-0.5.
We subtract the mean embedding of ~60 everyday posts (funnel/data/background.json) before
normalising, so similarity measures what a post has *beyond* a typical post. On the dev set
this raised the mean per-policy ROC AUC of exemplar similarity from 0.92 to 0.95
(docs/funnel.md); it depends on the model only, not on the policy set.

Long posts are clipped before tokenising (`clip`): the first ~2/3 and the last ~1/3 of
`max_chars` characters, cut at spaces. The tokenizer's cost grows with the text while a
mean of 100 token vectors says little more than a mean of 50, and exemplars and thresholds
are short-post things: a 2,000-character post should not be embedded as a blur of everything
in it. Keywords and patterns still read the whole post.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from functools import lru_cache
from itertools import chain
from pathlib import Path

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file
from tokenizers import Tokenizer

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "data" / "minilm_static"
DEFAULT_BACKGROUND = Path(__file__).resolve().parent / "data" / "background.json"
# Characters of a post the embedding reads (head and tail; see `clip`). None: all of it.
DEFAULT_MAX_CHARS = 256
# Token ids per space-separated chunk, kept for this many distinct chunks (then started afresh),
# chunks up to CACHED_CHUNK_CHARS characters (longer ones are rare and tokenized each time): a
# few MB in practice, under ~40 MB however adversarial the posts.
WORD_CACHE_SIZE = 100_000
CACHED_CHUNK_CHARS = 32


def clip(text: str, max_chars: int | None) -> str:
    """`text` if short enough, else its head (2/3 of `max_chars`) and tail (the rest), each cut
    at a space when one is near, joined by a space."""
    if max_chars is None or len(text) <= max_chars:
        return text
    head_len = (2 * max_chars) // 3
    tail_len = max_chars - head_len - 1
    head = text[:head_len]
    cut = head.rfind(" ", head_len // 2)
    if cut > 0:
        head = head[:cut]
    tail = text[len(text) - tail_len :] if tail_len > 0 else ""
    cut = tail.find(" ", 0, tail_len // 2)
    if cut >= 0:
        tail = tail[cut + 1 :]
    return f"{head} {tail}" if tail else head


FloatMatrix = npt.NDArray[np.float32]


class StaticEmbedder:
    """Turns texts into L2-normalised vectors. Read-only after construction."""

    def __init__(
        self,
        model_dir: Path = DEFAULT_MODEL_DIR,
        background: Path | None = DEFAULT_BACKGROUND,
        max_chars: int | None = DEFAULT_MAX_CHARS,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.max_chars = max_chars
        config = json.loads((self.model_dir / "config.json").read_text())
        tensors = load_file(str(self.model_dir / "model.safetensors"))
        # float32 once at load (30 MB): float16 sums are slower on CPUs and lose precision.
        self.vectors: FloatMatrix = np.ascontiguousarray(tensors["embeddings"], dtype=np.float32)
        self.dim = int(self.vectors.shape[1])
        self.max_length = int(config.get("max_length") or 512)
        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        # The tokenizer (BERT normaliser and pre-tokenizer, WordPiece) treats every character on
        # its own and splits at spaces, so a text's ids are its space-separated chunks' ids in
        # order: each distinct chunk is tokenized once and its ids remembered (`_ids`).
        self._chunk_ids: dict[str, tuple[int, ...]] = {}
        unk = self.tokenizer.token_to_id("[UNK]")
        # model2vec drops [UNK]: a post full of unknown symbols should not look alike.
        self.unk_id: int | None = unk
        # `tokenizers` releases the GIL and is thread-safe, but a lock keeps the model's
        # memory use flat if two funnels share it from two threads.
        self._lock = threading.Lock()
        self.background = np.zeros(self.dim, dtype=np.float32)
        if background is not None:
            sentences = json.loads(background.read_text(encoding="utf-8"))["sentences"]
            self.background = self.encode_uncentred(sentences).mean(axis=0).astype(np.float32)

    def encode(self, texts: Sequence[str]) -> FloatMatrix:
        """(len(texts), dim) float32: unit rows of (embedding - background); all-zero for a
        post with no known tokens."""
        raw = self.encode_uncentred(texts)
        empty = ~raw.any(axis=1)
        centred = raw - self.background
        centred /= np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
        centred[empty] = 0.0
        return centred

    def encode_uncentred(self, texts: Sequence[str]) -> FloatMatrix:
        """(len(texts), dim) float32, rows of unit length (all-zero for a post with no tokens)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        clipped = [clip(t, self.max_chars) for t in texts] if self.max_chars is not None else list(texts)
        id_lists = [ids[: self.max_length] if len(ids) > self.max_length else ids for ids in self._ids(clipped)]
        if self.unk_id is not None:
            unk = self.unk_id
            id_lists = [[i for i in ids if i != unk] if unk in ids else ids for ids in id_lists]
        lengths = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
        nonempty = lengths > 0
        if not nonempty.any():
            return out
        flat = np.fromiter(chain.from_iterable(id_lists), dtype=np.int64, count=int(lengths.sum()))
        offsets = np.concatenate(([0], np.cumsum(lengths[nonempty])[:-1]))
        # The sum, not the mean: the vector is normalised next, which divides the count away.
        sums = np.add.reduceat(self.vectors[flat], offsets, axis=0)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        out[nonempty] = sums / np.maximum(norms, 1e-12)
        return out

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids (no special tokens), as `tokenizer.encode` gives them, from the
        chunk cache; the chunks not seen yet are tokenized in one call."""
        chunked = [text.split(" ") for text in texts]
        known = self._chunk_ids
        missing = list({chunk for chunks in chunked for chunk in chunks if chunk not in known})
        if not missing:
            return _joined(chunked, known)
        with self._lock:
            encodings = self.tokenizer.encode_batch_fast(missing, add_special_tokens=False)
        fresh = {chunk: tuple(e.ids) for chunk, e in zip(missing, encodings, strict=True)}
        if len(known) + len(fresh) > WORD_CACHE_SIZE:
            # Start afresh with this batch's chunks. Replaced, never cleared in place: another
            # thread reading the old dict still finds its chunks there.
            known = {chunk: known[chunk] for chunks in chunked for chunk in chunks if chunk in known}
            self._chunk_ids = known
        known.update((chunk, ids) for chunk, ids in fresh.items() if len(chunk) <= CACHED_CHUNK_CHARS)
        if all(len(chunk) <= CACHED_CHUNK_CHARS for chunk in missing):
            return _joined(chunked, known)  # every chunk is in (this reference to) the cache now
        # Some were too long to keep: look this batch's chunks up in the fresh ones and the cache.
        fresh.update((chunk, known[chunk]) for chunks in chunked for chunk in chunks if chunk not in fresh)
        return _joined(chunked, fresh)


def _joined(chunked: list[list[str]], ids_of: dict[str, tuple[int, ...]]) -> list[list[int]]:
    """Each text's ids: its chunks' ids one after the other (`+=` extends in C: the fastest way)."""
    joined: list[list[int]] = []
    for chunks in chunked:
        ids: list[int] = []
        for chunk in chunks:
            ids += ids_of[chunk]
        joined.append(ids)
    return joined


@lru_cache(maxsize=4)
def load_embedder(model_dir: Path = DEFAULT_MODEL_DIR) -> StaticEmbedder:
    """The embedder for `model_dir`, loaded once per process and shared by every `Funnel`
    built from it (policy reloads build a new Funnel, not a new model)."""
    return StaticEmbedder(Path(model_dir))


class ExemplarIndex:
    """Every policy's exemplars embedded once.

    Similarity to a policy blends two views: the best cosine to any single exemplar (catches
    posts close to one example) and the cosine to the exemplars' centroid (the policy's
    general direction, less swayed by one oddly worded exemplar)."""

    def __init__(self, embedder: StaticEmbedder, exemplars: Sequence[tuple[str, Sequence[str]]]) -> None:
        self.embedder = embedder
        self.policy_ids = [pid for pid, texts in exemplars if texts]
        texts = [text for _, group in exemplars for text in group]
        counts = [len(group) for _, group in exemplars if group]
        self.starts = np.zeros(0, np.int64)
        if counts:
            self.starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
        self.matrix: FloatMatrix = embedder.encode(texts) if texts else np.zeros((0, embedder.dim), np.float32)
        centroids = np.add.reduceat(self.matrix, self.starts, axis=0) if counts else np.zeros((0, embedder.dim))
        norms = np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        self.centroids: FloatMatrix = (centroids / norms).astype(np.float32)

    def similarity(self, vectors: FloatMatrix, centroid_weight: float = 0.5) -> FloatMatrix:
        """(posts, policies-with-exemplars): (1 - w) * max cosine to an exemplar + w * cosine
        to the policy's centroid, clipped to [0, 1]."""
        if not self.policy_ids:
            return np.zeros((len(vectors), 0), dtype=np.float32)
        best = np.maximum.reduceat(vectors @ self.matrix.T, self.starts, axis=1)
        if centroid_weight:
            best = (1.0 - centroid_weight) * best + centroid_weight * (vectors @ self.centroids.T)
        return np.clip(best, 0.0, 1.0).astype(np.float32)
