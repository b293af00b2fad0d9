#!/usr/bin/env python3
"""Stage the harmony tokenizer vocabulary that vLLM needs to serve gpt-oss(-safeguard).

vLLM renders gpt-oss prompts with openai-harmony, which loads ``o200k_base.tiktoken``.
By default harmony downloads it at run time; on GPU nodes without egress that fails
("HarmonyError: error downloading or loading vocab file"). Pointing
``TIKTOKEN_ENCODINGS_BASE`` at a directory that holds the file avoids the download
(and, once set, harmony no longer falls back to downloading: the file must be there).

This script fills such a directory and checks every file against the SHA-256 that
tiktoken pins for it. Sources, in order: the destination itself (already staged),
``--source DIR`` (a copy staged by hand, e.g. carried into an air-gapped site), then a
download from ``--base-url`` unless ``--offline``. Only the standard library is used,
so it runs in the vLLM image, the worker image or any Python 3.8+.

Used by docker-compose.yml (service ``harmony-vocab``) and the Helm chart (init
container of the vLLM pods). Exit status 0 when every required file is in place.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

DEFAULT_BASE_URL = "https://openaipublic.blob.core.windows.net/encodings/"

# file name -> (sha256 pinned by tiktoken, required?)
# o200k_base is what harmony loads for gpt-oss; cl100k_base is staged too because some
# tiktoken users in the same image ask for it, but it is not required.
VOCAB = {
    "o200k_base.tiktoken": ("446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d", True),
    "cl100k_base.tiktoken": ("223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7", False),
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _good(path: Path, expected: str) -> bool:
    return path.is_file() and sha256_of(path) == expected


def _install(tmp: Path, dest: Path) -> None:
    os.chmod(tmp, 0o644)
    os.replace(tmp, dest)  # atomic within one directory


def stage(dest: Path, source: Path | None, base_url: str, offline: bool, timeout: float) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    failures = 0
    for name, (expected, required) in VOCAB.items():
        target = dest / name
        if _good(target, expected):
            print(f"ok       {target} (already staged, sha256 verified)")
            continue
        if target.exists():
            print(f"mismatch {target}: sha256 differs from the pinned one; replacing it")
        staged = False
        if source is not None and _good(source / name, expected):
            fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=f".{name}.")
            with os.fdopen(fd, "wb") as out, (source / name).open("rb") as src:
                shutil.copyfileobj(src, out)
            _install(Path(tmp_name), target)
            print(f"copied   {source / name} -> {target}")
            staged = True
        elif not offline:
            url = base_url.rstrip("/") + "/" + name
            fd, tmp_name = tempfile.mkstemp(dir=dest, prefix=f".{name}.")
            tmp_path = Path(tmp_name)
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                    shutil.copyfileobj(resp, out)
                if sha256_of(tmp_path) != expected:
                    print(f"error    {url}: downloaded file does not match the pinned sha256", file=sys.stderr)
                else:
                    _install(tmp_path, target)
                    print(f"fetched  {url} -> {target}")
                    staged = True
            except OSError as exc:
                print(f"error    {url}: {exc}", file=sys.stderr)
            finally:
                if not staged:
                    tmp_path.unlink(missing_ok=True)
        if not staged:
            level = "error" if required else "warning"
            print(f"{level:8} {name} is not staged in {dest}", file=sys.stderr)
            if required:
                failures += 1
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", required=True, type=Path, help="directory TIKTOKEN_ENCODINGS_BASE points at")
    parser.add_argument("--source", type=Path, default=None, help="pre-staged copy to take the files from")
    parser.add_argument("--base-url", default=os.environ.get("HARMONY_VOCAB_BASE_URL", DEFAULT_BASE_URL))
    parser.add_argument("--offline", action="store_true", help="never download; fail if a required file is missing")
    parser.add_argument("--timeout", type=float, default=60.0, help="download timeout in seconds")
    args = parser.parse_args(argv)
    source = args.source if args.source is not None and args.source.is_dir() else None
    return stage(args.dest, source, args.base_url, args.offline, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
