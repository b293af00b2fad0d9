#!/usr/bin/env python3
"""Convert a GGUF checkpoint into a Hugging Face safetensors directory that vLLM can serve.

Runs inside the vLLM CPU venv built by ``scripts/vllm_cpu_env.sh`` (it needs torch,
transformers and gguf; the project venv has none of them). The GGUF is dequantized by
transformers (``from_pretrained(..., gguf_file=...)``), cast to ``--dtype`` and written
with ``save_pretrained(safe_serialization=True)`` together with the tokenizer.

The chat template is taken from the GGUF metadata (``tokenizer.chat_template``); if the
file has none, the SmolLM2 / ChatML template below is used, so ``/v1/chat/completions``
always works. The result is checked (config, tokenizer, safetensors, chat template, a
rendered prompt) before the output directory is moved into place atomically.

Usage:
    python scripts/convert_gguf.py --gguf FILE.gguf --out DIR [--dtype bfloat16|float32]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# SmolLM2-Instruct's chat template (ChatML), as shipped in its tokenizer_config.json.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def log(msg: str) -> None:
    print(f"[convert_gguf] {msg}", flush=True)


def gguf_chat_template(path: Path) -> str | None:
    """Read ``tokenizer.chat_template`` from the GGUF header (None when absent)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    field = reader.fields.get("tokenizer.chat_template")
    if field is None:
        return None
    value = field.contents()
    return value if isinstance(value, str) and value.strip() else None


def convert(gguf_path: Path, out_dir: Path, dtype_name: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[dtype_name]
    src_dir, fname = str(gguf_path.parent), gguf_path.name

    t0 = time.monotonic()
    log(f"loading tokenizer from {gguf_path}")
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=fname)
    template = gguf_chat_template(gguf_path)
    if template is None:
        log("GGUF has no chat template: using the SmolLM2 (ChatML) template")
        template = SMOLLM2_CHAT_TEMPLATE
    else:
        log("using the chat template stored in the GGUF")
    tokenizer.chat_template = template

    log(f"loading + dequantizing model weights (dtype={dtype_name})")
    # transformers 5.x keeps GGUF weights packed (and refuses to save them) unless asked to
    # dequantize; 4.x dequantizes on load and has no GgufConfig.
    kwargs: dict[str, object] = {}
    try:
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(gguf_file=str(gguf_path), dequantize=True)
    except ImportError:
        pass
    loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=fname, dtype=dtype, **kwargs)
    # Re-home the dense weights in a plain model (no quantizer attached) so save_pretrained
    # writes ordinary safetensors with no quantization_config in config.json.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise SystemExit(f"state dict mismatch: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    model = model.to(dtype).eval()
    del loaded
    log(
        f"loaded {model.config.model_type} with {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
        f"parameters in {time.monotonic() - t0:.1f}s"
    )

    # End-of-turn token: for ChatML models generation must stop at <|im_end|>.
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else None
    if eos_id is not None:
        tokenizer.eos_token = "<|im_end|>"
        model.config.eos_token_id = eos_id
        if model.generation_config is not None:
            model.generation_config.eos_token_id = eos_id
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        # transformers 5 writes the template to chat_template.jinja; older loaders (and the brief
        # of this env) look for it in tokenizer_config.json, so put it there too.
        tc_path = tmp / "tokenizer_config.json"
        tc = json.loads(tc_path.read_text())
        tc["chat_template"] = template
        for key in ("is_local", "local_files_only"):  # artefacts of loading from a local path
            tc.pop(key, None)
        max_pos = getattr(model.config, "max_position_embeddings", None)
        if isinstance(max_pos, int) and max_pos > 0:
            tc["model_max_length"] = max_pos
        tc_path.write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n")
        verify(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {out_dir} in {time.monotonic() - t0:.1f}s")


def verify(model_dir: Path) -> None:
    """Fail loudly if the directory is not something vLLM can serve with chat completions."""
    from transformers import AutoConfig, AutoTokenizer

    files = sorted(p.name for p in model_dir.iterdir())
    log(f"files: {', '.join(files)}")
    if not any(f.endswith(".safetensors") for f in files):
        raise SystemExit(f"no .safetensors file in {model_dir}")
    AutoConfig.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    if not tok.chat_template:
        raise SystemExit("tokenizer has no chat_template after conversion")
    cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    in_cfg = bool(cfg.get("chat_template")) or (model_dir / "chat_template.jinja").exists()
    if not in_cfg:
        raise SystemExit("chat template not written to tokenizer_config.json / chat_template.jinja")
    rendered = tok.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    log(f"rendered chat prompt: {rendered!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True, type=Path, help="path to the .gguf file")
    ap.add_argument("--out", required=True, type=Path, help="output directory (replaced atomically)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    args = ap.parse_args(argv)
    if not args.gguf.is_file():
        print(f"[convert_gguf] ERROR: {args.gguf} is not a file", file=sys.stderr)
        return 2
    convert(args.gguf.resolve(), args.out.resolve(), args.dtype)
    return 0


if __name__ == "__main__":
    sys.exit(main())
