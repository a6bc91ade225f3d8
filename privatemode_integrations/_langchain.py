"""LangChain: `PrivatemodeEmbeddings`, a thin adapter over the shared client core."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
from langchain_core.embeddings import Embeddings
from langchain_core.utils import from_env, secret_from_env
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr

from privatemode_integrations import _instructions, _settings
from privatemode_integrations._client import EmbeddingsClient
from privatemode_integrations._core_cache import CoreCache

if TYPE_CHECKING:
    from langchain_text_splitters import TextSplitter


class PrivatemodeEmbeddings(BaseModel, Embeddings):
    """Confidential embeddings for LangChain through the Privatemode proxy.

    Texts go to the proxy at `base_url` (default `http://localhost:8080/v1`, or
    `PRIVATEMODE_BASE_URL`), which verifies the backend's attestation and encrypts every text
    before it leaves the machine.

        from privatemode_integrations import PrivatemodeEmbeddings

        embeddings = PrivatemodeEmbeddings()          # the real service, via your proxy
        offline = PrivatemodeEmbeddings.local()        # the bundled offline stack
        vectors = embeddings.embed_documents(["a", "b"])

    Inputs are packed into as few requests as the model's limits allow and sent concurrently
    (`max_concurrency`), with one retry layer (`max_retries`). An empty string is embedded like any
    other text. A text longer than the model accepts fails the call with `InputTooLongError`
    naming its index. `aembed_*` are truly asynchronous (no thread per call).
    """

    model_config = ConfigDict(
        extra="forbid",
        arbitrary_types_allowed=True,
        protected_namespaces=(),
        use_attribute_docstrings=True,
    )

    model: str = _settings.DEFAULT_MODEL
    """Embedding model. Default: the Privatemode service's `qwen3-embedding-4b`; local mode uses
    `all-minilm-l6-v2` unless another model is named."""
    base_url: str = Field(
        default_factory=from_env(_settings.BASE_URL_ENV, default=_settings.DEFAULT_BASE_URL)
    )
    """The proxy's OpenAI-compatible base URL, ending in `/v1`. From `PRIVATEMODE_BASE_URL` if
    set."""
    api_key: SecretStr | None = Field(
        default_factory=secret_from_env(_settings.API_KEY_ENV, default=None),
        exclude=True,
        repr=False,
    )
    """Sent to the proxy as a bearer token. From `PRIVATEMODE_API_KEY` if set. Never shown in
    reprs, dumps or logs."""
    dimensions: int | None = Field(default=None, ge=1)
    """Reduced output dimensions, for models that support them (qwen3-embedding-4b: 32..2560).
    None: the model's native size."""
    query_instruction: str | None = _instructions.DEFAULT_QUERY_INSTRUCTION
    """The task written in front of queries (never documents) for models trained so
    (qwen3-embedding-*): `Instruct: <query_instruction>\nQuery:<query>`. The default is
    Qwen3-Embedding's retrieval task; describe yours (in English) for other tasks, or None to send
    queries as they are. Models without instructions (the local MiniLM) never get one."""
    batch_size: int | None = Field(default=None, ge=1)
    """Most inputs per request. None: as many as the model's limits allow (fewest requests)."""
    max_concurrency: int = Field(default=_settings.DEFAULT_MAX_CONCURRENCY, ge=1)
    """Most requests in flight at once from this object, sync and async alike."""
    max_retries: int = Field(default=_settings.DEFAULT_MAX_RETRIES, ge=0)
    """Retries per request on 408/409/429/5xx and connection errors (exponential backoff with
    jitter, `Retry-After` honoured). A request is sent at most `max_retries + 1` times."""
    timeout: float | httpx.Timeout | None = _settings.DEFAULT_TIMEOUT
    """Seconds per HTTP attempt (or an `httpx.Timeout`); None waits forever."""
    show_progress_bar: bool = False
    """Show a tqdm bar that advances as each request finishes."""
    default_headers: dict[str, str] | None = Field(default=None, exclude=True, repr=False)
    """Extra headers sent with every request. Hidden from reprs and dumps: they may carry
    credentials."""
    http_client: httpx.Client | None = Field(default=None, exclude=True, repr=False)
    """Your own `httpx.Client` (proxies, TLS settings); its connections are reused."""
    http_async_client: httpx.AsyncClient | None = Field(default=None, exclude=True, repr=False)
    """Your own `httpx.AsyncClient`, for the async methods."""
    _cores: CoreCache = PrivateAttr(default_factory=CoreCache)

    @classmethod
    def local(cls, **kwargs: Any) -> PrivatemodeEmbeddings:
        """Embeddings from the bundled local stack (proxy + local backend, real attestation).

        Starts the stack once per process (shared, stopped at exit) and points `base_url` at it;
        `model` defaults to the local backend's `all-minilm-l6-v2`. Only on request: nothing
        falls back to the local model by itself.
        """
        from privatemode_integrations._local import local_base_url

        if "base_url" in kwargs:
            raise ValueError("local() chooses its own base_url; do not pass base_url")
        kwargs.setdefault("model", _settings.LOCAL_MODEL)
        return cls(base_url=local_base_url(), **kwargs)

    def text_splitter(
        self, chunk_tokens: int | None = None, overlap: int | None = None, **kwargs: Any
    ) -> TextSplitter:
        """A LangChain text splitter whose chunks this model always accepts.

            splitter = embeddings.text_splitter()
            chunks = splitter.split_documents(documents)   # then any vector store

        It splits on paragraphs, then lines, words and characters (LangChain's
        `RecursiveCharacterTextSplitter`), measuring in the model's own tokens when we ship its
        tokenizer (the local model: exact) and in UTF-8 bytes otherwise (never fewer than the
        tokens). `chunk_tokens`: longest chunk, special tokens included (default: the model's
        limit, 256, for the local model; 1,024 bytes, about 250 tokens, otherwise).
        `overlap`: tokens shared by neighbouring chunks (default: an eighth of a chunk). Other
        keyword arguments go to the splitter (e.g. `add_start_index=True`).
        """
        from privatemode_integrations._langchain_splitter import ModelTextSplitter
        from privatemode_integrations._splitting import chunk_plan

        return ModelTextSplitter(chunk_plan(self.model, chunk_tokens, overlap), **kwargs)

    @property
    def client(self) -> EmbeddingsClient:
        """The shared client core with this object's current settings."""
        return self._cores.for_object(self, model=self.model)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents; one vector per text, in order."""
        return self.client.embed(texts).tolist()  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> list[float]:
        """Embed one query text."""
        return self.client.embed([self._query(text)])[0].tolist()  # type: ignore[no-any-return]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents on the running event loop."""
        return (await self.client.aembed(texts)).tolist()  # type: ignore[no-any-return]

    async def aembed_query(self, text: str) -> list[float]:
        """Embed one query text on the running event loop."""
        query = self._query(text)
        return (await self.client.aembed([query]))[0].tolist()  # type: ignore[no-any-return]

    def _query(self, text: str) -> str:
        return _instructions.instructed_query(text, self.model, self.query_instruction)
