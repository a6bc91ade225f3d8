"""The source of the notebooks in this folder: writes each .ipynb and, with --execute, runs it.

    python notebooks/build_notebooks.py --execute     # regenerate and execute all three
    python notebooks/build_notebooks.py --execute langchain_rag

The .ipynb files are committed with their outputs so they read well on GitHub; edit the cells
here, not in the .ipynb. tests/notebooks/test_notebooks.py checks that the committed notebooks
match these sources and that every cell runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nbformat
from nbformat.notebooknode import NotebookNode

HERE = Path(__file__).resolve().parent
KERNEL = "python3"  # the kernel named in the notebooks' metadata, for readers
VENV_KERNEL = "privatemode-notebooks"  # the kernel they are executed with: this interpreter
TIMEOUT = 180  # seconds per cell

Cell = tuple[str, str]  # ("md" | "code", source)


def md(source: str) -> Cell:
    return ("md", source.strip("\n"))


def code(source: str) -> Cell:
    return ("code", source.strip("\n"))


# -- shared cells ----------------------------------------------------------------------------

SETUP_STACK = code(
    """
import atexit
import os

from privatemode_proxy import LocalStack

stack = None  # the local stack, when this notebook starts one
if os.environ.get("PRIVATEMODE_BASE_URL"):
    # Your own privatemode-proxy, e.g. in front of the Privatemode service
    # (privatemode-proxy --apiKey @key.txt --manifestPath manifest.json).
    base_url = os.environ["PRIVATEMODE_BASE_URL"]
    model = "qwen3-embedding-4b"
else:
    # The bundled local backend and the attesting proxy, both in this kernel.
    stack = LocalStack().start()
    atexit.register(stack.stop)
    base_url, model = stack.base_url, "all-minilm-l6-v2"
print(f"proxy: {base_url}\\nmodel: {model}")
"""
)

LOAD_CORPUS = code(
    """
import json
from importlib import resources

corpus = json.loads(
    resources.files("privatemode_demo").joinpath("data/demo_corpus.json").read_text()
)
questions = corpus["questions"]
print(f"{len(corpus['documents'])} documents, {len(questions)} questions")
for doc in corpus["documents"][:3]:
    print(f"- {doc['id']} ({doc['topic']}): {doc['text'][:70]}...")
"""
)

STOP_STACK = code(
    """
if stack is not None:
    stack.stop()
    print("local stack stopped")
"""
)


# -- langchain_rag.ipynb -------------------------------------------------------------------------

LANGCHAIN_RAG: list[Cell] = [
    md(
        """
# RAG retrieval with LangChain and `PrivatemodeEmbeddings`

A small retrieval pipeline: load a document set, split it with the splitter
`PrivatemodeEmbeddings` makes for its model (chunks measured in the model's own tokens, so none
is ever too long), embed the chunks, keep them in LangChain's `InMemoryVectorStore`, and retrieve for a few
questions. Every text goes through `privatemode-proxy`, which verified the backend's attestation
and encrypts each request before it leaves the process.

This notebook starts the bundled **local stack** (local backend with the all-MiniLM-L6-v2 model,
plus the proxy) in the kernel, so it runs offline. Set `PRIVATEMODE_BASE_URL` to the URL of your
own proxy (e.g. `http://localhost:8080/v1`) to run the same cells against the Privatemode service.
"""
    ),
    SETUP_STACK,
    md("## Load the bundled corpus and split it"),
    LOAD_CORPUS,
    code(
        """
from langchain_core.documents import Document

from privatemode_integrations import PrivatemodeEmbeddings

embeddings = PrivatemodeEmbeddings(base_url=base_url, model=model)
documents = [
    Document(page_content=d["text"], metadata={"doc_id": d["id"], "topic": d["topic"]})
    for d in corpus["documents"]
]
# Chunks of at most 32 tokens as the model counts them, 4 shared with the next chunk. Small, to
# show a split on these short documents; the default is the model's limit (256 for the local
# model), the right size for your own documents.
splitter = embeddings.text_splitter(chunk_tokens=32, overlap=4)
chunks = splitter.split_documents(documents)
print(f"{len(documents)} documents -> {len(chunks)} chunks")
for chunk in chunks[:2]:
    print(chunk.metadata, repr(chunk.page_content))
"""
    ),
    md(
        """
## Embed the chunks and store them

`PrivatemodeEmbeddings` packs the chunks into as few requests as the model's limits allow and
sends them concurrently. Its repr never shows the API key.
"""
    ),
    code(
        """
import time

from langchain_core.vectorstores import InMemoryVectorStore

print(repr(embeddings)[:200], "...")

start = time.perf_counter()
store = InMemoryVectorStore.from_documents(chunks, embeddings)
print(f"embedded and stored {len(chunks)} chunks in {time.perf_counter() - start:.2f} s")
"""
    ),
    md("## Retrieve: the top hits and their cosine similarity"),
    code(
        """
top_ids = {}
for q in questions:
    start = time.perf_counter()
    hits = store.similarity_search_with_score(q["question"], k=3)
    elapsed = (time.perf_counter() - start) * 1000
    print(f"Q: {q['question']}   [{elapsed:.0f} ms]")
    for rank, (doc, score) in enumerate(hits, 1):
        mark = "  <- expected" if doc.metadata["doc_id"] == q["expected_id"] else ""
        print(f"  {rank}. {score:.3f}  {doc.metadata['doc_id']:<24}{mark}")
        print(f"       {doc.page_content[:90]}")
    top_ids[q["question"]] = hits[0][0].metadata["doc_id"]
    print()
"""
    ),
    code(
        """
misses = {q["question"]: top_ids[q["question"]] for q in questions
          if top_ids[q["question"]] != q["expected_id"]}
assert not misses, f"expected document not ranked first: {misses}"
print(f"all {len(questions)} questions: the expected document is the top hit")
"""
    ),
    md(
        """
## The retriever in a RAG chain

`as_retriever()` plugs the store into LCEL. Here the chain stops at the prompt, to show what a
chat model would receive; put any chat model after `prompt` (for confidential generation, the
Privatemode chat API behind the same proxy).
"""
    ),
    code(
        """
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough

retriever = store.as_retriever(search_kwargs={"k": 2})
prompt = ChatPromptTemplate.from_messages([
    ("system", "Answer from the context only.\\n\\nContext:\\n{context}"),
    ("human", "{question}"),
])


def format_docs(docs: list[Document]) -> str:
    return "\\n".join(f"[{d.metadata['doc_id']}] {d.page_content}" for d in docs)


chain = {"context": retriever | format_docs, "question": RunnablePassthrough()} | prompt
print(chain.invoke("Why must an AES-GCM nonce never repeat?").to_string())
"""
    ),
    md("## Async: the same embeddings on the notebook's event loop"),
    code(
        """
vectors = await embeddings.aembed_documents(["first text", "second text", ""])
print(len(vectors), "vectors of", len(vectors[0]), "floats; the empty text got a vector too")
"""
    ),
    md("## Clean up"),
    STOP_STACK,
]


# -- llamaindex_vector_index.ipynb ---------------------------------------------------------------

LLAMAINDEX_VECTOR_INDEX: list[Cell] = [
    md(
        """
# A LlamaIndex `VectorStoreIndex` with `PrivatemodeEmbedding`

The same corpus as the LangChain notebook, through LlamaIndex: documents, the node parser
`PrivatemodeEmbedding` makes for its model (a `SentenceSplitter` counting the model's own tokens,
metadata included),
a `VectorStoreIndex` whose embeddings come from `PrivatemodeEmbedding`, a retriever, and then the
index persisted to disk and loaded again (without embedding the documents a second time).

The notebook starts the bundled local stack in the kernel (offline). Set `PRIVATEMODE_BASE_URL`
to your own proxy's URL to use the Privatemode service instead.
"""
    ),
    SETUP_STACK,
    md("## Documents and nodes"),
    LOAD_CORPUS,
    code(
        """
from llama_index.core import Document, Settings

from privatemode_integrations import PrivatemodeEmbedding

Settings.embed_model = embed = PrivatemodeEmbedding(base_url=base_url, model_name=model)

documents = [
    Document(text=d["text"], id_=d["id"], metadata={"topic": d["topic"]})
    for d in corpus["documents"]
]
# Small nodes, to show a split on these short documents; the default is the model's limit.
nodes = embed.node_parser(chunk_tokens=32, overlap=4).get_nodes_from_documents(documents)
print(f"{len(documents)} documents -> {len(nodes)} nodes")
print(nodes[0].get_content(metadata_mode="embed"))
"""
    ),
    md("## Build the index and retrieve"),
    code(
        """
import time

from llama_index.core import VectorStoreIndex


def embedding_requests() -> int | None:
    # How many /v1/embeddings requests the local backend has received (None: not local).
    return None if stack is None else stack.backend.request_log["/v1/embeddings"]


start = time.perf_counter()
index = VectorStoreIndex(nodes)
print(f"indexed {len(nodes)} nodes in {time.perf_counter() - start:.2f} s")
"""
    ),
    code(
        """
def ask(index: VectorStoreIndex) -> dict[str, list[tuple[str, float]]]:
    retriever = index.as_retriever(similarity_top_k=3)
    answers = {}
    for q in questions:
        start = time.perf_counter()
        hits = retriever.retrieve(q["question"])
        elapsed = (time.perf_counter() - start) * 1000
        print(f"Q: {q['question']}   [{elapsed:.0f} ms]")
        for rank, hit in enumerate(hits, 1):
            mark = "  <- expected" if hit.node.ref_doc_id == q["expected_id"] else ""
            print(f"  {rank}. {hit.score:.3f}  {hit.node.ref_doc_id:<24}{mark}")
        answers[q["question"]] = [(hit.node.ref_doc_id, hit.score) for hit in hits]
    return answers


answers = ask(index)
misses = [q["question"] for q in questions if answers[q["question"]][0][0] != q["expected_id"]]
assert not misses, f"expected document not ranked first for: {misses}"
"""
    ),
    md(
        """
## Persist the index and load it again

The stored index keeps the vectors, so loading it embeds nothing: only the questions are
embedded again (one request each).
"""
    ),
    code(
        """
import tempfile
from pathlib import Path

persist_dir = Path(tempfile.mkdtemp(prefix="privatemode-index-"))
index.storage_context.persist(persist_dir=persist_dir)
for path in sorted(persist_dir.iterdir()):
    print(f"{path.name:<28} {path.stat().st_size:>8} bytes")
"""
    ),
    code(
        """
from llama_index.core import StorageContext, load_index_from_storage

before = embedding_requests()
loaded = load_index_from_storage(StorageContext.from_defaults(persist_dir=persist_dir))
after_load = embedding_requests()
reloaded_answers = ask(loaded)
after_questions = embedding_requests()

assert [[d for d, _ in hits] for hits in reloaded_answers.values()] == [
    [d for d, _ in hits] for hits in answers.values()
], "the loaded index ranks differently"
if stack is not None:
    print(f"\\nembedding requests while loading: {after_load - before}, "
          f"for {len(questions)} questions: {after_questions - after_load}")
    assert after_load == before
print("the loaded index returns the same hits")
"""
    ),
    md("## Clean up"),
    code(
        """
import shutil

shutil.rmtree(persist_dir)
if stack is not None:
    stack.stop()
    print("local stack stopped")
"""
    ),
]


# -- attestation_and_encryption.ipynb ----------------------------------------------------------

ATTESTATION_AND_ENCRYPTION: list[Cell] = [
    md(
        """
# Attestation and encryption, seen from outside

Three things `privatemode-proxy` guarantees, shown rather than claimed:

1. **What it verified** before sending anything: the backend's attestation (an AMD SEV-SNP
   report inside a Contrast attestation response) and that the backend runs exactly the
   deployment described by the pinned manifest.
2. **What travels on the wire**: one embeddings request as the app sends it, next to the same
   request between proxy and backend — the text is ciphertext there, and so are the vectors.
3. **What a wrong manifest does**: the proxy refuses (503) and the backend never receives a
   `/v1/embeddings` request.

The setup runs the bundled local backend in this kernel and the real `privatemode-proxy`
command as a separate process, with a small recording relay between them that keeps a copy of
every byte. (The local backend signs its evidence with a root of its own, which the proxy trusts
only because it is passed with `--trustedRoot`; with the real service the proxy trusts AMD's
roots.)
"""
    ),
    code(
        """
import atexit
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from privatemode_proxy.local import LocalBackend

workspace = Path(tempfile.mkdtemp(prefix="privatemode-attestation-"))
backend = LocalBackend(workspace / "backend").start()
atexit.register(backend.stop)
print("local backend:", backend.url)
print("its root:     ", backend.root_pem_path)
print("its manifest: ", backend.manifest_path)
"""
    ),
    md("A TCP relay that forwards bytes both ways and keeps a copy of each connection:"),
    code(
        '''
import socketserver
import threading


class RecordingRelay(socketserver.ThreadingTCPServer):
    """Forwards each connection to `target`; keeps (to_backend, to_proxy) bytes per connection."""

    daemon_threads = True

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.connections: list[tuple[bytearray, bytearray]] = []
        super().__init__(("127.0.0.1", 0), _RelayHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _RelayHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        to_backend, to_proxy = bytearray(), bytearray()
        self.server.connections.append((to_backend, to_proxy))
        with socket.create_connection(self.server.target) as upstream:
            back = threading.Thread(target=_pump, args=(upstream, self.request, to_proxy))
            back.start()
            _pump(self.request, upstream, to_backend)
            back.join()


def _pump(src: socket.socket, dst: socket.socket, copy: bytearray) -> None:
    try:
        while data := src.recv(65536):
            copy.extend(data)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


host, port = backend.url.removeprefix("http://").split(":")
relay = RecordingRelay((host, int(port)))
atexit.register(relay.stop)
print("relay:", relay.url, "->", backend.url)
'''
    ),
    md(
        """
Now the proxy, started exactly as you would start it for the real service, except that the
endpoint is the relay and the local root is trusted in addition to AMD's. `--manifestPath` pins
the manifest: the proxy accepts only a deployment that runs exactly this one.
"""
    ),
    code(
        """
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


proxy_command = Path(sys.executable).with_name("privatemode-proxy")


def start_proxy(name: str, endpoint: str, manifest: Path) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    args = [
        "--apiEndpoint", endpoint,
        "--trustedRoot", str(backend.root_pem_path),
        "--manifestPath", str(manifest),
        "--port", str(port),
        "--workspace", str(workspace / name),
    ]
    print("$ privatemode-proxy", " ".join(args))
    log = workspace / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(proxy_command), *args], stdout=out, stderr=out)
    atexit.register(process.terminate)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            health = httpx.get(url + "/healthz", timeout=5).json()
            if health["upstream"] != "pending":
                break
        except httpx.TransportError:
            if process.poll() is not None:
                raise RuntimeError(f"proxy exited: {log.read_text()}") from None
        if time.monotonic() > deadline:
            raise TimeoutError(f"proxy not ready: {log.read_text()}")
        time.sleep(0.1)
    print(f"proxy at {url}: upstream {health['upstream']}")
    return process, url, log


proxy, proxy_url, proxy_log = start_proxy("proxy", relay.url, backend.manifest_path)
"""
    ),
    md(
        """
## 1. What the proxy verified

The proxy's status page (`GET /`, or `/?format=json`) shows the attestation it accepted. The
manifest hash it reports is the SHA-256 of the manifest we pinned, and the measurement in the
hardware report is the one the manifest allows.
"""
    ),
    code(
        """
status = httpx.get(proxy_url + "/", params={"format": "json"}).json()
attestation = status["attestation"]
print(json.dumps(attestation, indent=2))
"""
    ),
    code(
        """
manifest_bytes = backend.manifest_path.read_bytes()
manifest = json.loads(manifest_bytes)
pinned_sha256 = hashlib.sha256(manifest_bytes).hexdigest()
snp = manifest["ReferenceValues"]["snp"][0]

print("sha256 of the pinned manifest:  ", pinned_sha256)
print("manifest hash the proxy verified:", attestation["manifest_sha256"])
print("measurement the manifest allows: ", snp["TrustedMeasurement"])
print("measurement in the SNP report:   ", attestation["measurement"])
print("minimum TCB in the manifest:     ", snp["MinimumTCB"])
print("TCB in the SNP report:           ", attestation["reported_tcb"])
assert attestation["manifest_sha256"] == pinned_sha256
assert attestation["measurement"] == snp["TrustedMeasurement"].lower()

if os.environ.get("PRIVATEMODE_BASE_URL"):  # your own proxy, if you run one
    yours = os.environ["PRIVATEMODE_BASE_URL"].removesuffix("/").removesuffix("/v1")
    print("\\nyour proxy at", yours)
    print(json.dumps(httpx.get(yours + "/", params={"format": "json"}).json(), indent=2))
"""
    ),
    md(
        """
## 2. One request: what the app sees, and what the wire carries

The app posts plain OpenAI-style JSON to the proxy on 127.0.0.1 and gets plain vectors back.
"""
    ),
    code(
        """
import base64

import numpy as np

text = "Patient 4711: the biopsy shows no malignancy; follow-up in six months."
app_request = {"model": "all-minilm-l6-v2", "input": [text]}
app_response = httpx.post(proxy_url + "/v1/embeddings", json=app_request, timeout=60).json()
vector = app_response["data"][0]["embedding"]


def shorten(value: object, keep: int = 64) -> object:
    # Long strings and lists cut for display, with their full length noted.
    if isinstance(value, str) and len(value) > keep:
        return f"{value[:keep]}... ({len(value)} chars)"
    if isinstance(value, list) and len(value) > 4:
        return [*value[:4], f"... ({len(value)} items)"]
    if isinstance(value, list):
        return [shorten(v, keep) for v in value]
    if isinstance(value, dict):
        return {k: shorten(v, keep) for k, v in value.items()}
    return value


print("app -> proxy (what your code sends):")
print(json.dumps(app_request, indent=2))
print("\\nproxy -> app (what your code receives):")
print(json.dumps(shorten(app_response), indent=2))
"""
    ),
    md(
        """
Between proxy and backend the same request looks like this. The relay's copy is plain HTTP/1.1,
yet only `model` is readable in the request body (and `id` and `usage` in the response): every
other field is `secretID:nonce:iv:ciphertext`, AES-256-GCM under the secret exchanged after
attestation. The connection also shows that attestation and the secret exchange came first.
"""
    ),
    code(
        '''
def http_messages(stream: bytes) -> list[tuple[str, dict[str, str], bytes]]:
    """Split an HTTP/1.1 byte stream into (start line, headers, body) messages."""
    messages, pos = [], 0
    while pos < len(stream):
        head_end = stream.index(b"\\r\\n\\r\\n", pos)
        start_line, *header_lines = stream[pos:head_end].decode("latin-1").split("\\r\\n")
        headers = {}
        for line in header_lines:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", ""):
            raise ValueError("chunked bodies are not handled by this small parser")
        end = head_end + 4 + int(headers.get("content-length", "0"))
        messages.append((start_line, headers, stream[head_end + 4 : end]))
        pos = end
    return messages


exchanges = []  # (request, response) in the order they were sent, per connection
for number, (to_backend, to_proxy) in enumerate(relay.connections, 1):
    for request, response in zip(http_messages(bytes(to_backend)), http_messages(bytes(to_proxy))):
        exchanges.append((request, response))
        print(f"connection {number}: {request[0]:<40} -> {response[0]}")
'''
    ),
    code(
        """
(request_line, request_headers, wire_request), (status_line, _, wire_response) = next(
    exchange for exchange in exchanges if exchange[0][0].startswith("POST /v1/embeddings")
)
shown = {
    k: v for k, v in request_headers.items() if k.startswith("privatemode") or k == "content-type"
}
print("proxy -> backend (on the wire):")
print(request_line)
print(json.dumps(shown, indent=2))
print(json.dumps(shorten(json.loads(wire_request), keep=120), indent=2))
print("\\nbackend -> proxy (on the wire):")
print(status_line)
print(json.dumps(shorten(json.loads(wire_response), keep=120), indent=2))
"""
    ),
    md(
        """
Checked, not just shown: neither the text nor any of its words of five letters or more, nor the
vector (as the base64 float32 bytes the backend returns, or as JSON numbers), appears anywhere in
what went over the wire.
"""
    ),
    code(
        """
to_backend_all = b"".join(bytes(up) for up, _ in relay.connections)
to_proxy_all = b"".join(bytes(down) for _, down in relay.connections)
# Words of five letters or more: shorter strings such as "4711" turn up in long hex by chance.
words = [w.strip(":;.,") for w in text.split() if len(w.strip(":;.,")) >= 5]
for word in [text, *words]:
    assert word.encode() not in to_backend_all, word
vector_b64 = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes())
assert vector_b64[:24] not in to_proxy_all  # the backend sends base64 float32
assert repr(vector[0]).encode() not in to_proxy_all  # nor as JSON numbers
print(f"{len(to_backend_all)} bytes to the backend, {len(to_proxy_all)} bytes back:")
print(f"none of {len(words)} words of the input, no plaintext vector:", words)
"""
    ),
    md(
        """
## 3. A wrong pinned manifest: refused

A second proxy pins a manifest that allows another measurement — as if the service ran code
other than the code you pinned. It attests the backend, finds that the manifest the backend runs
is not the pinned one, and refuses every request with 503. The backend's request log shows that
no secret was exchanged and no `/v1/embeddings` request arrived.
"""
    ),
    code(
        """
wrong = json.loads(manifest_bytes)
wrong["ReferenceValues"]["snp"][0]["TrustedMeasurement"] = "00" * 48
wrong_manifest = workspace / "wrong-manifest.json"
wrong_manifest.write_text(json.dumps(wrong))

backend.request_log.clear()
wrong_proxy, wrong_url, wrong_log = start_proxy("wrong-proxy", backend.url, wrong_manifest)
refused = httpx.post(wrong_url + "/v1/embeddings", json=app_request, timeout=60)
print(refused.status_code)
print(json.dumps(refused.json(), indent=2))
"""
    ),
    code(
        """
received = backend.request_log.snapshot()
print("the backend received:", received)
print("\\nthe proxy logged:")
for line in wrong_log.read_text().splitlines():
    if "ERROR" in line:
        print(" ", line)
        break

assert refused.status_code == 503
assert refused.json()["error"]["code"] == "attestation_failed"
assert received.get("/v1/embeddings", 0) == 0
assert received.get("/privatemode/v1/secret", 0) == 0
"""
    ),
    md("## Clean up"),
    code(
        """
for process in (proxy, wrong_proxy):
    process.terminate()
    process.wait(timeout=30)
relay.stop()
backend.stop()
shutil.rmtree(workspace)
print("stopped both proxies, the relay and the backend")
"""
    ),
]

NOTEBOOKS: dict[str, list[Cell]] = {
    "langchain_rag": LANGCHAIN_RAG,
    "llamaindex_vector_index": LLAMAINDEX_VECTOR_INDEX,
    "attestation_and_encryption": ATTESTATION_AND_ENCRYPTION,
}


def build(name: str) -> NotebookNode:
    """The notebook `name` from its cell sources, without outputs."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": KERNEL,
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    for number, (kind, source) in enumerate(NOTEBOOKS[name], 1):
        new_cell = nbformat.v4.new_markdown_cell if kind == "md" else nbformat.v4.new_code_cell
        # Stable ids, so a rebuild changes only what changed.
        nb.cells.append(new_cell(source, id=f"cell-{number:02d}"))
    return nb


def kernel_manager(spec_root: Path) -> Any:
    """A kernel manager whose kernel is this interpreter (this venv), whatever else is installed.

    A kernelspec named `python3` elsewhere on the Jupyter path (a user's, another Python's) could
    otherwise start the notebooks in a different environment; this one is written to `spec_root`
    and is the only one the manager sees.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    spec_dir = spec_root / "kernels" / VENV_KERNEL
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python ({sys.executable})",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(spec_root / "kernels")])
    return AsyncKernelManager(kernel_name=VENV_KERNEL, kernel_spec_manager=specs)


def execute(nb: NotebookNode, spec_root: Path, *, timeout: int = TIMEOUT) -> NotebookNode:
    """Run every cell in a fresh kernel of this interpreter, in this folder; raises on an error."""
    from nbclient import NotebookClient

    client = NotebookClient(
        nb,
        km=kernel_manager(spec_root),
        timeout=timeout,
        resources={"metadata": {"path": str(HERE)}},
    )
    client.execute()
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(NOTEBOOKS)}; default: all")
    parser.add_argument("--execute", action="store_true", help="run each notebook, keep outputs")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(NOTEBOOKS))
    if unknown:
        parser.error(f"unknown notebook(s) {unknown}; choose from {list(NOTEBOOKS)}")
    for name in args.names or list(NOTEBOOKS):
        nb = build(name)
        if args.execute:
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as spec_root:
                execute(nb, Path(spec_root))
            print(f"{name}: executed in {time.perf_counter() - start:.1f} s")
        path = HERE / f"{name}.ipynb"
        nbformat.write(nb, path)
        print(f"wrote {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
