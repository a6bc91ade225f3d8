"""A folder of real documents through each framework's defaults plus our splitter, offline.

`documents/` holds snapshots of this project's docs (Markdown: tables, code, long paragraphs)
and two public-domain texts, about 18,000 words. The recipe is the README's "your own
documents" section; everything runs against the real local stack (proxy + backend + model).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.documents import Document
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_text_splitters import RecursiveCharacterTextSplitter
from llama_index.core import (
    Settings,
    SimpleDirectoryReader,
    StorageContext,
    VectorStoreIndex,
    load_index_from_storage,
)
from llama_index.core.schema import MetadataMode

from privatemode_integrations import (
    InputTooLongError,
    PrivatemodeEmbedding,
    PrivatemodeEmbeddings,
)
from privatemode_integrations._tokens import TokenCounter

DOCUMENTS = Path(__file__).resolve().parent / "documents"
LOCAL_MODEL = "all-minilm-l6-v2"
LIMIT = 256
QUESTION = "Is the civil war testing whether a nation conceived in liberty can long endure?"


def load_folder() -> list[Document]:
    """The README's LangChain loader: every text file of a folder, one Document each."""
    return [
        Document(page_content=path.read_text(encoding="utf-8"), metadata={"source": path.name})
        for path in sorted(DOCUMENTS.iterdir())
        if path.suffix in (".md", ".txt")
    ]


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text))


def test_the_folder_is_real_and_has_long_paragraphs() -> None:
    texts = [d.page_content for d in load_folder()]
    paragraphs = [p for t in texts for p in re.split(r"\n\s*\n", t) if p.strip()]
    assert len(texts) >= 10 and len(paragraphs) >= 200
    counts = TokenCounter(LOCAL_MODEL).input_tokens(paragraphs)
    assert sum(n > LIMIT for n in counts) >= 20  # many paragraphs the model cannot take whole


def test_langchain_default_splitter_fails_before_sending(local_stack: Any) -> None:
    """Why the splitter exists: LangChain's usual 1,000-character chunks are too long for the
    local model. The call fails at once, naming the chunks, with nothing sent."""
    sent: list[str] = []
    http = httpx.Client(event_hooks={"request": [lambda r: sent.append(r.url.path)]})
    chunks = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200).split_documents(
        load_folder()
    )
    embeddings = PrivatemodeEmbeddings(
        base_url=local_stack.base_url, model=LOCAL_MODEL, http_client=http
    )
    with pytest.raises(InputTooLongError) as info:
        InMemoryVectorStore.from_documents(chunks, embeddings)
    assert len(info.value.input_indices) > 10 and sent == []
    assert "text_splitter" in str(info.value)
    http.close()


def test_langchain_folder_split_embedded_retrieved_persisted(
    local_stack: Any, tmp_path: Path
) -> None:
    embeddings = PrivatemodeEmbeddings(base_url=local_stack.base_url, model=LOCAL_MODEL)
    documents = load_folder()
    chunks = embeddings.text_splitter().split_documents(documents)
    texts = [c.page_content for c in chunks]
    # Every chunk fits, as the backend's own engine counts it; nothing was lost in splitting.
    assert max(local_stack.backend.engine.count_tokens(texts)) <= LIMIT
    for document in documents:
        source = document.metadata["source"]
        mine = [c.page_content for c in chunks if c.metadata["source"] == source]
        assert words(document.page_content) <= words(" ".join(mine)), document.metadata

    store = InMemoryVectorStore.from_documents(chunks, embeddings)
    assert len(store.store) == len(chunks) > 150
    assert all(len(entry["vector"]) == 384 for entry in store.store.values())

    top = store.similarity_search(QUESTION, k=1)[0]
    assert top.metadata["source"] == "gettysburg-address.txt"
    # Any chunk is found by its own text (among the top 3: a chunk that is a prefix of its
    # overlapping neighbour can tie with it, and ties are ordered by float noise).
    for chunk in chunks[:: max(1, len(chunks) // 12)]:
        hits = store.similarity_search(chunk.page_content, k=3)
        assert chunk.page_content in [hit.page_content for hit in hits]

    path = tmp_path / "store.json"
    store.dump(str(path))
    loaded = InMemoryVectorStore.load(str(path), embeddings)
    assert loaded.similarity_search(QUESTION, k=1)[0].page_content == top.page_content


@pytest.fixture
def llama_settings() -> Iterator[None]:
    """LlamaIndex's global Settings, as the README sets them, restored afterwards."""
    saved = (Settings._embed_model, Settings._node_parser, Settings._transformations)
    try:
        yield
    finally:
        Settings._embed_model, Settings._node_parser, Settings._transformations = saved


@pytest.mark.usefixtures("llama_settings")
def test_llamaindex_folder_defaults_plus_node_parser(local_stack: Any, tmp_path: Path) -> None:
    embed = PrivatemodeEmbedding(base_url=local_stack.base_url, model_name=LOCAL_MODEL)
    Settings.embed_model = embed
    Settings.node_parser = embed.node_parser()

    documents = SimpleDirectoryReader(str(DOCUMENTS)).load_data()
    index = VectorStoreIndex.from_documents(documents)

    nodes = list(index.docstore.docs.values())
    assert len(nodes) > 150
    embedded = [n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    assert all(text.startswith("file_path: ") for text in embedded)  # metadata counted in
    assert max(local_stack.backend.engine.count_tokens(embedded)) <= LIMIT
    vectors = index.vector_store.data.embedding_dict  # type: ignore[attr-defined]
    assert set(vectors) == {n.node_id for n in nodes}
    assert all(len(v) == 384 for v in vectors.values())

    retriever = index.as_retriever(similarity_top_k=1)
    assert retriever.retrieve(QUESTION)[0].node.metadata["file_name"] == "gettysburg-address.txt"
    top3 = index.as_retriever(similarity_top_k=3)
    for node in nodes[:: max(1, len(nodes) // 12)]:
        # Among the top 3: overlapping chunks can tie, ordered by float noise.
        hits = top3.retrieve(node.get_content())
        assert node.node_id in [hit.node.node_id for hit in hits]

    index.storage_context.persist(str(tmp_path / "index"))
    storage = StorageContext.from_defaults(persist_dir=str(tmp_path / "index"))
    loaded = load_index_from_storage(storage)
    again = loaded.as_retriever(similarity_top_k=1).retrieve(QUESTION)[0]
    assert again.node.metadata["file_name"] == "gettysburg-address.txt"


def test_splitter_sizes_are_checked() -> None:
    embeddings = PrivatemodeEmbeddings(model=LOCAL_MODEL)
    with pytest.raises(ValueError, match="between 10 and 256"):
        embeddings.text_splitter(chunk_tokens=300)
    with pytest.raises(ValueError, match="overlap"):
        embeddings.text_splitter(chunk_tokens=100, overlap=60)
    small = embeddings.text_splitter(chunk_tokens=64, overlap=0)
    text = max((d.page_content for d in load_folder()), key=len)
    counts = TokenCounter(LOCAL_MODEL).input_tokens(small.split_text(text))
    assert max(counts) <= 64 and sum(counts) > 64 * 3
    # Both survive the trip to a worker process (IngestionPipeline(num_workers=...)).
    parser = PrivatemodeEmbedding(model_name=LOCAL_MODEL).node_parser(chunk_tokens=64)
    for splitter in (small, parser):
        copy = pickle.loads(pickle.dumps(splitter))
        assert copy.split_text(text) == splitter.split_text(text)


def test_splitter_without_the_tokenizer_bounds_by_bytes() -> None:
    """Qwen3's tokenizer is not shipped: chunks are cut by UTF-8 bytes, never fewer than tokens."""
    qwen = PrivatemodeEmbeddings()  # qwen3-embedding-4b
    chunks = qwen.text_splitter().split_documents(load_folder())
    assert max(len(c.page_content.encode()) + 2 for c in chunks) <= 1024
    parser = PrivatemodeEmbedding().node_parser(chunk_tokens=2000)
    nodes = parser.get_nodes_from_documents(SimpleDirectoryReader(str(DOCUMENTS)).load_data())
    assert max(len(n.get_content(MetadataMode.EMBED).encode()) + 2 for n in nodes) <= 2000
