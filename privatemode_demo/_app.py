"""The main job (`privatemode-demo`): confidential RAG retrieval with both frameworks, offline.

It starts the bundled local stack (the local backend with its real model, and the proxy that
attests it) in this process, indexes a small corpus with LangChain (`InMemoryVectorStore` over
`PrivatemodeEmbeddings`) and with LlamaIndex (`VectorStoreIndex` over `PrivatemodeEmbedding`),
asks the corpus's questions, and prints the hits with scores and timings, what the proxy
verified before it sent any text, and what the backend received.

Exit status: 0 when every question's expected document is the top hit in both frameworks, 1
when one is not (the hits are printed either way), 2 when the corpus or the stack is unusable.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from privatemode_integrations._settings import LOCAL_MODEL

CORPUS_RESOURCE = "data/demo_corpus.json"


# -- the corpus --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Doc:
    id: str
    topic: str
    text: str


@dataclass(frozen=True)
class Question:
    text: str
    expected_id: str


@dataclass(frozen=True)
class Corpus:
    documents: tuple[Doc, ...]
    questions: tuple[Question, ...]

    def text_of(self, doc_id: str) -> str:
        return next(d.text for d in self.documents if d.id == doc_id)


class CorpusError(ValueError):
    """The corpus file is not of the expected shape; the message says what to change."""


def _field(item: Any, key: str, where: str) -> str:
    value = item.get(key) if isinstance(item, dict) else None
    if not isinstance(value, str) or not value.strip():
        raise CorpusError(f"{where}: '{key}' must be a non-empty string")
    return value


def parse_corpus(raw: bytes, source: str) -> Corpus:
    """Read `{"documents": [{id, topic, text}], "questions": [{question, expected_id}]}`."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise CorpusError(f"{source}: not valid JSON ({exc})") from None
    docs_raw = data.get("documents") if isinstance(data, dict) else None
    questions_raw = data.get("questions") if isinstance(data, dict) else None
    if not isinstance(docs_raw, list) or not docs_raw:
        raise CorpusError(f"{source}: 'documents' must be a non-empty list")
    if not isinstance(questions_raw, list) or not questions_raw:
        raise CorpusError(f"{source}: 'questions' must be a non-empty list")
    documents = tuple(
        Doc(
            id=_field(item, "id", f"{source}: documents[{i}]"),
            topic=_field(item, "topic", f"{source}: documents[{i}]"),
            text=_field(item, "text", f"{source}: documents[{i}]"),
        )
        for i, item in enumerate(docs_raw)
    )
    ids = [d.id for d in documents]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise CorpusError(f"{source}: document ids must be unique; repeated: {duplicates}")
    questions = tuple(
        Question(
            text=_field(item, "question", f"{source}: questions[{i}]"),
            expected_id=_field(item, "expected_id", f"{source}: questions[{i}]"),
        )
        for i, item in enumerate(questions_raw)
    )
    for i, q in enumerate(questions):
        if q.expected_id not in ids:
            raise CorpusError(
                f"{source}: questions[{i}] expects document '{q.expected_id}', "
                "which is not in 'documents'"
            )
    return Corpus(documents, questions)


def load_corpus(path: Path | None = None) -> Corpus:
    """The given corpus file, or the bundled one (32 short documents, 6 questions)."""
    if path is not None:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise CorpusError(f"cannot read the corpus {path}: {exc.strerror}") from None
        return parse_corpus(raw, str(path))
    bundled = resources.files("privatemode_demo").joinpath(CORPUS_RESOURCE)
    return parse_corpus(bundled.read_bytes(), f"privatemode_demo/{CORPUS_RESOURCE}")


# -- the two pipelines -------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    doc_id: str
    score: float


@dataclass(frozen=True)
class Answer:
    question: Question
    hits: tuple[Hit, ...]
    seconds: float

    @property
    def top_is_expected(self) -> bool:
        return bool(self.hits) and self.hits[0].doc_id == self.question.expected_id


@dataclass(frozen=True)
class FrameworkRun:
    title: str
    index_seconds: float
    answers: tuple[Answer, ...]
    chunks: int
    """How many pieces the documents were split into (the model takes 256 tokens per text)."""

    @property
    def correct(self) -> int:
        return sum(a.top_is_expected for a in self.answers)


def _timed_answers(corpus: Corpus, retrieve: Callable[[str], list[Hit]]) -> tuple[Answer, ...]:
    answers = []
    for question in corpus.questions:
        start = time.perf_counter()
        hits = retrieve(question.text)
        answers.append(Answer(question, tuple(hits), time.perf_counter() - start))
    return tuple(answers)


def _best_per_document(scored: Iterable[tuple[str, float]], top_k: int) -> list[Hit]:
    """The first `top_k` distinct documents of a ranking of chunks (a document's best chunk)."""
    hits: dict[str, Hit] = {}
    for doc_id, score in scored:
        if doc_id not in hits:
            hits[doc_id] = Hit(doc_id, score)
            if len(hits) == top_k:
                break
    return list(hits.values())


def run_langchain(base_url: str, corpus: Corpus, top_k: int) -> FrameworkRun:
    """LangChain: split to fit the model -> InMemoryVectorStore -> similarity search."""
    from langchain_core.documents import Document
    from langchain_core.vectorstores import InMemoryVectorStore

    from privatemode_integrations import PrivatemodeEmbeddings

    embeddings = PrivatemodeEmbeddings(base_url=base_url, model=LOCAL_MODEL)
    store = InMemoryVectorStore(embedding=embeddings)
    start = time.perf_counter()
    chunks = embeddings.text_splitter().split_documents(
        [Document(page_content=d.text, metadata={"doc_id": d.id}) for d in corpus.documents]
    )
    store.add_documents(chunks)
    index_seconds = time.perf_counter() - start

    def retrieve(query: str) -> list[Hit]:
        found = store.similarity_search_with_score(query, k=len(chunks))
        return _best_per_document(
            ((str(doc.metadata["doc_id"]), float(score)) for doc, score in found), top_k
        )

    return FrameworkRun(
        "LangChain  - InMemoryVectorStore + PrivatemodeEmbeddings",
        index_seconds,
        _timed_answers(corpus, retrieve),
        len(chunks),
    )


def run_llamaindex(base_url: str, corpus: Corpus, top_k: int) -> FrameworkRun:
    """LlamaIndex: PrivatemodeEmbedding -> VectorStoreIndex (its node parser) -> retriever."""
    from llama_index.core import Document, VectorStoreIndex

    from privatemode_integrations import PrivatemodeEmbedding

    embed_model = PrivatemodeEmbedding(base_url=base_url, model_name=LOCAL_MODEL)
    documents = [
        # The topic is kept as metadata but not embedded, so both frameworks embed the same text.
        Document(
            text=d.text,
            id_=d.id,
            metadata={"topic": d.topic},
            excluded_embed_metadata_keys=["topic"],
        )
        for d in corpus.documents
    ]
    start = time.perf_counter()
    index = VectorStoreIndex.from_documents(
        documents, embed_model=embed_model, transformations=[embed_model.node_parser()]
    )
    index_seconds = time.perf_counter() - start
    chunks = len(index.docstore.docs)
    retriever = index.as_retriever(similarity_top_k=chunks)

    def retrieve(query: str) -> list[Hit]:
        ranked = retriever.retrieve(query)
        return _best_per_document(
            ((str(hit.node.ref_doc_id), float(hit.score or 0.0)) for hit in ranked), top_k
        )

    return FrameworkRun(
        "LlamaIndex - VectorStoreIndex + PrivatemodeEmbedding",
        index_seconds,
        _timed_answers(corpus, retrieve),
        chunks,
    )


# -- printing ----------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _snippet(text: str, width: int = 72) -> str:
    return textwrap.shorten(text, width=width, placeholder=" ...")


# The attestation fields worth reading first; any others the proxy reports follow them.
_ATTESTATION_ORDER = (
    "tee",
    "product",
    "measurement",
    "reported_tcb",
    "manifest_sha256",
    "mesh_ca_sha256",
    "chip_id",
    "reference_value",
    "coordinator_version",
    "trusted_root",
    "verified_at",
)


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def attestation_lines(status: dict[str, Any]) -> list[str]:
    """The proxy's status (GET / on the proxy) as aligned `key  value` lines."""
    attestation = status.get("attestation")
    if not isinstance(attestation, dict):
        return [f"  not attested: {status.get('last_error') or 'no attestation yet'}"]
    keys = [k for k in _ATTESTATION_ORDER if k in attestation]
    keys += [k for k in attestation if k not in keys]
    rows = [(k, _value(attestation[k])) for k in keys]
    secret = status.get("secret")
    if isinstance(secret, dict) and "use_until" in secret:
        rows.append(("secret used until", str(secret["use_until"])))
    rows.append(("backend", str(status.get("upstream"))))
    width = max(len(k) for k, _ in rows)
    return [f"  {k.ljust(width)}  {v}" for k, v in rows]


def print_run(run: FrameworkRun, corpus: Corpus, out: TextIO) -> None:
    print(f"\n== {run.title}", file=out)
    pieces = f" ({run.chunks} chunks)" if run.chunks != len(corpus.documents) else ""
    print(
        f"   indexed {len(corpus.documents)} documents{pieces} in {_ms(run.index_seconds)}",
        file=out,
    )
    for n, answer in enumerate(run.answers, 1):
        q = answer.question
        print(f"\n   Q{n}: {q.text}  [{_ms(answer.seconds)}]", file=out)
        for rank, hit in enumerate(answer.hits, 1):
            mark = ""
            if rank == 1:
                mark = (
                    "  <- expected"
                    if hit.doc_id == q.expected_id
                    else (f"  <- MISS: expected {q.expected_id}")
                )
            print(f"      {rank}. {hit.score:.3f}  {hit.doc_id}{mark}", file=out)
        if answer.hits:
            print(f"      > {_snippet(corpus.text_of(answer.hits[0].doc_id))}", file=out)


# -- main --------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="privatemode-demo",
        description=(
            "Confidential RAG retrieval with LangChain and LlamaIndex on the bundled local stack: "
            "the local backend (all-minilm-l6-v2) behind the attesting, encrypting proxy, both "
            "in this process. Needs no account and no network."
        ),
        epilog=(
            "Exit status: 0 when every expected document is the top hit in both frameworks, "
            "1 when one is not, 2 when the corpus or the local stack is unusable."
        ),
    )
    parser.add_argument(
        "--corpus",
        type=Path,
        metavar="FILE",
        help='a JSON file {"documents": [{"id", "topic", "text"}], "questions": '
        '[{"question", "expected_id"}]} (default: the bundled 32-document corpus)',
    )
    parser.add_argument(
        "--top-k", type=int, default=3, metavar="K", help="hits shown per question (default: 3)"
    )
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Run the demo; returns the exit status (see the module docstring; 130 on Ctrl-C)."""
    try:
        return _run(argv, out=out)
    except KeyboardInterrupt:  # the stack was stopped on the way out; no traceback
        print("privatemode-demo: interrupted", file=sys.stderr)
        return 130


def _run(argv: Sequence[str] | None, *, out: TextIO | None) -> int:
    out = out if out is not None else sys.stdout
    args = _parser().parse_args(argv)
    if args.top_k < 1:
        _parser().error("--top-k must be at least 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        corpus = load_corpus(args.corpus)
    except CorpusError as exc:
        print(f"privatemode-demo: {exc}", file=sys.stderr)
        return 2

    from privatemode_proxy import LocalStack

    from privatemode_integrations import PrivatemodeError

    print(
        "privatemode-demo: confidential RAG on the bundled local backend "
        f"({LOCAL_MODEL}, {len(corpus.documents)} documents, {len(corpus.questions)} questions)",
        file=out,
    )
    print("Starting the local stack (local backend + attesting proxy) ...", file=out, flush=True)
    start = time.perf_counter()
    stack = LocalStack()
    try:
        stack.start()
    except Exception as exc:  # the stack cleaned up after itself; say why it failed
        print(f"privatemode-demo: the local stack did not start: {exc}", file=sys.stderr)
        return 2
    try:
        print(
            f"   ready in {_ms(time.perf_counter() - start)}; proxy at {stack.base_url}",
            file=out,
        )
        status = stack.attestation_summary()
        print("\n== What the proxy verified before sending any text", file=out)
        for line in attestation_lines(status):
            print(line, file=out)
        if status.get("local_mode"):
            print(
                "   (local mode: this evidence comes from the bundled backend, signed by its own\n"
                "    self-made root, trusted only because local mode was asked for. It runs the\n"
                "    real verification code; it proves no confidential-computing hardware.)",
                file=out,
            )
        out.flush()

        runs = []
        for run_framework in (run_langchain, run_llamaindex):
            try:
                run = run_framework(stack.base_url, corpus, args.top_k)
            except PrivatemodeError as exc:
                print(f"privatemode-demo: embedding the corpus failed: {exc}", file=sys.stderr)
                return 2
            print_run(run, corpus, out)
            out.flush()
            runs.append(run)

        received = stack.backend.request_log.snapshot()
        print("\n== What the backend received (request counts per path)", file=out)
        for path, count in sorted(received.items()):
            print(f"   {count:4d}  {path}", file=out)
        print(
            "   each /v1/embeddings body had its fields encrypted (AES-256-GCM) under the secret\n"
            "   exchanged after attestation; only the model name was left in the clear.",
            file=out,
        )
    finally:
        stack.stop()

    total = len(corpus.questions)
    print("\n== Result", file=out)
    for run in runs:
        name = run.title.split(" - ")[0].strip()
        print(
            f"   {name}: {run.correct}/{total} questions answered by the expected document",
            file=out,
        )
    rankings = {tuple(tuple(h.doc_id for h in a.hits) for a in run.answers) for run in runs}
    agreement = "the same" if len(rankings) == 1 else "different"
    print(f"   both frameworks returned {agreement} rankings", file=out)
    ok = all(run.correct == total for run in runs)
    print(f"   total time {_ms(time.perf_counter() - start)}", file=out)
    out.flush()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
