"""LlamaIndex: `PrivatemodeEmbedding`, a thin adapter over the shared client core."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.events.embedding import (
    EmbeddingEndEvent,
    EmbeddingStartEvent,
)
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from privatemode_integrations import _instructions, _settings
from privatemode_integrations._client import EmbeddingsClient
from privatemode_integrations._core_cache import CoreCache

if TYPE_CHECKING:
    from llama_index.core.node_parser import SentenceSplitter

# The dispatcher `BaseEmbedding` reports through, so our events look exactly like its own.
dispatcher = get_dispatcher("llama_index.core.base.embeddings.base")


def _api_key_from_env() -> SecretStr | None:
    key = _settings.env_api_key()
    return SecretStr(key) if key else None


class PrivatemodeEmbedding(BaseEmbedding):
    """Confidential embeddings for LlamaIndex through the Privatemode proxy.

        from llama_index.core import Settings
        from privatemode_integrations import PrivatemodeEmbedding

        Settings.embed_model = PrivatemodeEmbedding()       # the real service, via your proxy
        Settings.embed_model = PrivatemodeEmbedding.local() # the bundled offline stack

    `get_text_embedding_batch` embeds the whole list in one client call: the client packs it into
    as few requests as the model's limits allow, at most `embed_batch_size` (default 2048, not
    LlamaIndex's 10) and `batch_size` texts each, sends up to `max_concurrency` at once
    (LlamaIndex's own loop would send one batch at a time), and retries each request at most
    `max_retries` times. Instrumentation events (`EmbeddingStartEvent`/`EmbeddingEndEvent`,
    callback-manager events) are reported per `embed_batch_size` batch as LlamaIndex does, and
    the rate limiter, if any, is asked once per batch. With an `embeddings_cache` the base
    class's loop runs. An empty string is embedded like any other text; a text too long for the
    model fails the call with `InputTooLongError` naming its index.
    """

    model_config = ConfigDict(
        arbitrary_types_allowed=True,
        protected_namespaces=("pydantic_model_",),
        use_attribute_docstrings=True,
        # A misspelt or foreign setting is an error, not silently a default.
        extra="forbid",
    )

    @model_validator(mode="before")
    @classmethod
    def _model_alias(cls, data: Any) -> Any:
        # `model=` as in LangChain's class and llama-index's OpenAIEmbedding: the same setting.
        if isinstance(data, dict) and "model" in data:
            data = dict(data)
            model = data.pop("model")
            if "model_name" in data and data["model_name"] != model:
                raise ValueError(
                    f"model={model!r} and model_name={data['model_name']!r} disagree; pass one"
                )
            data["model_name"] = model
        return data

    model_name: str = Field(default=_settings.DEFAULT_MODEL)
    """Embedding model. Default: the Privatemode service's `qwen3-embedding-4b`; `local()` uses
    `all-minilm-l6-v2` unless another model is named."""
    embed_batch_size: int = Field(default=_settings.LLAMAINDEX_DEFAULT_BATCH_SIZE, gt=0, le=2048)
    """Texts LlamaIndex passes per call; the client splits further by the model's limits."""
    base_url: str = Field(default_factory=_settings.env_base_url)
    """The proxy's OpenAI-compatible base URL, ending in `/v1`. From `PRIVATEMODE_BASE_URL` if
    set."""
    api_key: SecretStr | None = Field(default_factory=_api_key_from_env, exclude=True, repr=False)
    """Sent to the proxy as a bearer token. From `PRIVATEMODE_API_KEY` if set. Never in reprs,
    `to_dict()` or logs."""
    dimensions: int | None = Field(default=None, ge=1)
    """Reduced output dimensions, for models that support them. None: native size."""
    query_instruction: str | None = _instructions.DEFAULT_QUERY_INSTRUCTION
    """The task written in front of queries (never documents) for models trained so
    (qwen3-embedding-*): `Instruct: <query_instruction>\nQuery:<query>`. The default is
    Qwen3-Embedding's retrieval task; describe yours (in English) for other tasks, or None to send
    queries as they are. Models without instructions (the local MiniLM) never get one."""
    batch_size: int | None = Field(default=None, ge=1)
    """Most inputs per HTTP request. None: as many as the model's limits allow."""
    max_concurrency: int = Field(default=_settings.DEFAULT_MAX_CONCURRENCY, ge=1)
    """Most requests in flight at once from this object, sync and async alike."""
    max_retries: int = Field(default=_settings.DEFAULT_MAX_RETRIES, ge=0)
    """Retries per request on 408/409/429/5xx and connection errors; at most
    `max_retries + 1` attempts."""
    timeout: float | httpx.Timeout | None = _settings.DEFAULT_TIMEOUT
    """Seconds per HTTP attempt (or an `httpx.Timeout`); None waits forever."""
    show_progress_bar: bool = False
    """Show a tqdm bar that advances as each request finishes."""
    default_headers: dict[str, str] | None = Field(default=None, exclude=True, repr=False)
    """Extra headers for every request; hidden from reprs and dumps."""
    http_client: httpx.Client | None = Field(default=None, exclude=True, repr=False)
    """Your own `httpx.Client`."""
    http_async_client: httpx.AsyncClient | None = Field(default=None, exclude=True, repr=False)
    """Your own `httpx.AsyncClient`."""

    _cores: CoreCache = PrivateAttr(default_factory=CoreCache)

    @classmethod
    def class_name(cls) -> str:
        return "PrivatemodeEmbedding"

    @classmethod
    def local(cls, **kwargs: Any) -> PrivatemodeEmbedding:
        """Embeddings from the bundled local stack (proxy + local backend, real attestation).

        Starts the stack once per process (shared, stopped at exit); `model_name` defaults to
        `all-minilm-l6-v2`. Only on request: nothing falls back to the local model by itself.
        """
        from privatemode_integrations._local import local_base_url

        if "base_url" in kwargs:
            raise ValueError("local() chooses its own base_url; do not pass base_url")
        if "model" not in kwargs:
            kwargs.setdefault("model_name", _settings.LOCAL_MODEL)
        return cls(base_url=local_base_url(), **kwargs)

    def node_parser(
        self, chunk_tokens: int | None = None, overlap: int | None = None, **kwargs: Any
    ) -> SentenceSplitter:
        """A LlamaIndex node parser whose nodes this model always accepts.

            Settings.embed_model = embed = PrivatemodeEmbedding.local()
            Settings.node_parser = embed.node_parser()
            index = VectorStoreIndex.from_documents(SimpleDirectoryReader("docs").load_data())

        A `SentenceSplitter` measuring in the model's own tokens when we ship its tokenizer (the
        local model: exact) and in UTF-8 bytes otherwise (never fewer than the tokens), with the
        node's embedded metadata (e.g. `file_path`) counted in. `chunk_tokens`: longest node as
        embedded, special tokens included (default: the model's limit, 256, for the local model;
        1,024 bytes, about 250 tokens, otherwise). `overlap`: tokens shared by neighbouring nodes
        (default: an eighth of a node). Other keyword arguments go to `SentenceSplitter`.
        """
        from privatemode_integrations._llamaindex_splitter import ModelNodeParser
        from privatemode_integrations._splitting import chunk_plan

        return ModelNodeParser(chunk_plan(self.model_name, chunk_tokens, overlap), **kwargs)

    @property
    def client(self) -> EmbeddingsClient:
        """The shared client core with this object's current settings."""
        return self._cores.for_object(self, model=self.model_name)

    def _get_query_embedding(self, query: str) -> Embedding:
        return self.client.embed([self._query(query)])[0].tolist()  # type: ignore[no-any-return]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        text = self._query(query)
        return (await self.client.aembed([text]))[0].tolist()  # type: ignore[no-any-return]

    def _query(self, query: str) -> str:
        return _instructions.instructed_query(query, self.model_name, self.query_instruction)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self.client.embed([text])[0].tolist()  # type: ignore[no-any-return]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self.client.aembed([text]))[0].tolist()  # type: ignore[no-any-return]

    @dispatcher.span
    def get_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        """Embed `texts`, all batches concurrently; one vector per text, in order."""
        if self.embeddings_cache is not None or not texts:
            return super().get_text_embedding_batch(texts, show_progress, **kwargs)
        size = self.embed_batch_size
        batches = [texts[i : i + size] for i in range(0, len(texts), size)]
        model_dict = self.to_payload()
        event_ids = []
        for _batch in batches:
            dispatcher.event(EmbeddingStartEvent(model_dict=model_dict))
            event_ids.append(
                self.callback_manager.on_event_start(
                    CBEventType.EMBEDDING, payload={EventPayload.SERIALIZED: model_dict}
                )
            )
            if self.rate_limiter is not None:
                self.rate_limiter.acquire()
        vectors = self.client.embed(texts, show_progress=show_progress or None, batch_size=size)
        result: list[Embedding] = vectors.tolist()
        for k, (batch, event_id) in enumerate(zip(batches, event_ids, strict=True)):
            embeddings = result[k * size : k * size + len(batch)]
            dispatcher.event(EmbeddingEndEvent(chunks=batch, embeddings=embeddings))
            self.callback_manager.on_event_end(
                CBEventType.EMBEDDING,
                payload={EventPayload.CHUNKS: batch, EventPayload.EMBEDDINGS: embeddings},
                event_id=event_id,
            )
        return result

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self.client.embed(texts).tolist()  # type: ignore[no-any-return]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return (await self.client.aembed(texts)).tolist()  # type: ignore[no-any-return]
