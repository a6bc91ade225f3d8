"""The main job: `privatemode-demo` on the real local stack (model, attestation, encryption).

The console script runs as a user runs it; its printed hits are parsed and compared with the
bundled corpus's expected documents. In-process runs check the exit status on a miss and on a
bad corpus.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from privatemode_demo import load_corpus, main

SECTIONS = ("LangChain", "LlamaIndex")
QUESTION = re.compile(r"^   Q\d+: (?P<question>.+?)  \[\d+(?:\.\d+)? (?:ms|s)\]$")
HIT = re.compile(r"^      (?P<rank>\d+)\. (?P<score>-?\d\.\d{3})  (?P<doc>\S+)(?P<mark>.*)$")


def parse_hits(output: str) -> dict[str, dict[str, list[tuple[str, float]]]]:
    """{framework: {question: [(doc id, score), ...]}} from the demo's printed sections."""
    result: dict[str, dict[str, list[tuple[str, float]]]] = {}
    framework: str | None = None
    question: str | None = None
    for line in output.splitlines():
        if line.startswith("== "):
            framework = next((s for s in SECTIONS if line[3:].startswith(s)), None)
            question = None
            if framework is not None:
                result[framework] = {}
            continue
        if framework is None:
            continue
        if m := QUESTION.match(line):
            question = m["question"]
            result[framework][question] = []
        elif (m := HIT.match(line)) and question is not None:
            hits = result[framework][question]
            assert int(m["rank"]) == len(hits) + 1, line
            hits.append((m["doc"], float(m["score"])))
    return result


def test_console_script_prints_the_expected_top_hits() -> None:
    script = Path(sys.executable).with_name("privatemode-demo")
    assert script.exists(), f"console script not installed next to {sys.executable}"
    proc = subprocess.run([str(script)], capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout

    corpus = load_corpus()
    hits = parse_hits(out)
    assert set(hits) == set(SECTIONS), out
    for framework in SECTIONS:
        answered = hits[framework]
        assert list(answered) == [q.text for q in corpus.questions], out
        for q in corpus.questions:
            ranked = answered[q.text]
            assert len(ranked) == 3, (framework, q.text, ranked)
            assert ranked[0][0] == q.expected_id, (framework, q.text, ranked)
            scores = [score for _, score in ranked]
            assert scores == sorted(scores, reverse=True), (framework, q.text, ranked)
            assert 0.0 < scores[0] <= 1.0
    # Both frameworks embed the same texts through the same stack: same ranking.
    assert [[d for d, _ in r] for r in hits["LangChain"].values()] == [
        [d for d, _ in r] for r in hits["LlamaIndex"].values()
    ]

    # What the proxy verified, and that the backend was attested before it got any text.
    assert re.search(r"^  tee\s+AMD SEV-SNP$", out, re.M), out
    assert re.search(r"^  manifest_sha256\s+[0-9a-f]{64}$", out, re.M), out
    assert re.search(r"^  measurement\s+[0-9a-f]{96}$", out, re.M), out
    counts = {path: int(n) for n, path in re.findall(r"^\s+(\d+)  (/\S+)$", out, re.M)}
    assert counts["/privatemode/v1/attest"] >= 1
    assert counts["/privatemode/v1/secret"] >= 1
    # at least one request per index and one per question, per framework
    assert counts["/v1/embeddings"] >= 2 * (1 + len(corpus.questions))
    assert f"LangChain: {len(corpus.questions)}/{len(corpus.questions)}" in out
    assert f"LlamaIndex: {len(corpus.questions)}/{len(corpus.questions)}" in out


def _write_corpus(path: Path, questions: list[dict[str, str]]) -> Path:
    bundled = load_corpus()
    keep = {"sourdough", "espresso", "black-holes", "tcp-handshake"}
    docs = [
        {"id": d.id, "topic": d.topic, "text": d.text} for d in bundled.documents if d.id in keep
    ]
    path.write_text(json.dumps({"documents": docs, "questions": questions}))
    return path


def test_a_question_whose_expected_document_is_not_first_exits_1(tmp_path: Path) -> None:
    corpus = _write_corpus(
        tmp_path / "corpus.json",
        [
            {"question": "What makes sourdough taste sour?", "expected_id": "espresso"},
            {"question": "What happens at the event horizon?", "expected_id": "black-holes"},
        ],
    )
    out = io.StringIO()
    status = main(["--corpus", str(corpus), "--top-k", "2"], out=out)
    text = out.getvalue()
    assert status == 1, text
    hits = parse_hits(text)
    for framework in SECTIONS:
        sour = hits[framework]["What makes sourdough taste sour?"]
        assert sour[0][0] == "sourdough"
        assert len(sour) == 2
        assert hits[framework]["What happens at the event horizon?"][0][0] == "black-holes"
    assert text.count("<- MISS: expected espresso") == 2, text
    assert "LangChain: 1/2" in text and "LlamaIndex: 1/2" in text


def test_a_corpus_naming_an_unknown_document_exits_2_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = _write_corpus(
        tmp_path / "corpus.json",
        [{"question": "What is a volcano?", "expected_id": "volcanoes"}],
    )
    out = io.StringIO()
    assert main(["--corpus", str(corpus)], out=out) == 2
    assert out.getvalue() == ""  # nothing started, nothing printed
    err = capsys.readouterr().err
    assert "expects document 'volcanoes', which is not in 'documents'" in err


def test_an_unreadable_corpus_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.json"
    assert main(["--corpus", str(missing)], out=io.StringIO()) == 2
    assert str(missing) in capsys.readouterr().err


def test_a_corpus_of_long_texts_is_split_and_answered(tmp_path: Path) -> None:
    """Ordinary 150-300-word texts (two in Markdown), over the model's 256 tokens: split, no
    traceback, and the questions still find their documents."""
    folder = Path(__file__).resolve().parent.parent / "integrations" / "documents"

    def paragraph(name: str, opening: str) -> str:
        text = (folder / name).read_text()
        return next(p for p in re.split(r"\n\s*\n", text) if p.startswith(opening))

    texts = {
        "gettysburg": paragraph("gettysburg-address.txt", "Four score"),
        "truths": paragraph("declaration-of-independence.txt", "We hold these truths"),
        "proxy-cpu": paragraph("benchmark-analysis.md", "**Why the proxy keeps"),
        "attacks": paragraph("reliability.md", "Attacks, case by case"),
    }
    assert all(150 <= len(t.split()) <= 400 for t in texts.values())
    questions = [
        ("a great civil war and a battlefield dedicated to the soldiers who died", "gettysburg"),
        ("unalienable rights: life, liberty and the pursuit of happiness", "truths"),
        ("why does the proxy cost CPU time: decrypting, base64 and re-encoding", "proxy-cpu"),
        ("attacks with a changed measurement and re-signed evidence", "attacks"),
    ]
    corpus = tmp_path / "long.json"
    corpus.write_text(
        json.dumps(
            {
                "documents": [{"id": k, "topic": "history", "text": t} for k, t in texts.items()],
                "questions": [{"question": q, "expected_id": e} for q, e in questions],
            }
        )
    )
    script = Path(sys.executable).with_name("privatemode-demo")
    proc = subprocess.run(
        [str(script), "--corpus", str(corpus), "--top-k", "2"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"indexed 4 documents \(\d+ chunks\)", proc.stdout), proc.stdout
    hits = parse_hits(proc.stdout)
    for framework in SECTIONS:
        for question, expected in questions:
            ranked = hits[framework][question]
            assert ranked[0][0] == expected and len({d for d, _ in ranked}) == 2, ranked


def test_ctrl_c_ends_the_demo_quietly_with_130() -> None:
    import signal

    script = Path(sys.executable).with_name("privatemode-demo")
    process = subprocess.Popen(
        [str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Python's own SIGINT handler, even if this test run inherited an ignored SIGINT.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert process.stdout is not None
        # Interrupt before any corpus is embedded: the demo flushes this block, then embeds
        # (waiting for a later block raced the demo's own end on a fast machine).
        for line in process.stdout:
            if line.startswith("== What the proxy verified"):
                break
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, err
    assert "Traceback" not in err and "privatemode-demo: interrupted" in err
