"""Model limits and packing inputs into as few requests as those limits allow.

Limits come from the proxy's model catalogue for a model it knows (the proxy splits by the same
catalogue), otherwise from the server's `GET /v1/models` entry for the model (when it carries
them), or from conservative defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

LimitsSource = Literal["server", "catalogue", "default"]


@dataclass(frozen=True)
class ModelLimits:
    """How much one `/v1/embeddings` request to a model may carry."""

    max_inputs_per_request: int
    max_tokens_per_request: int
    max_tokens_per_input: int
    source: LimitsSource


DEFAULT_LIMITS = ModelLimits(
    max_inputs_per_request=2048,
    max_tokens_per_request=300_000,
    max_tokens_per_input=8192,
    source="default",
)
"""For a model neither the server nor the catalogue describes: the OpenAI API's own limits
(2,048 inputs and 300,000 tokens per request, 8,192 tokens per input). Generous on purpose:
langchain-openai sends 1,000 inputs per request to any model, and small fixed defaults cost
an unknown model 8x its requests (and its rate limit). A server that takes fewer says so in
its `/v1/models` entry, or the caller sets `batch_size`."""

_LIMIT_KEYS = {
    "max_inputs_per_request": ("max_inputs_per_request", "max_batch_size", "max_inputs"),
    "max_tokens_per_request": ("max_tokens_per_request", "max_batch_tokens"),
    "max_tokens_per_input": (
        "max_tokens_per_input",
        "max_input_tokens",
        "max_model_len",
        "context_length",
    ),
}


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = int(value)
    return number if number > 0 and number == value else None


def catalogue_limits(model: str) -> ModelLimits:
    """The catalogue's limits for `model`, or `DEFAULT_LIMITS` for a model it doesn't know."""
    # Imported on use: the catalogue is data shared with the proxy, and importing the client
    # must not import the proxy's server side.
    from privatemode_proxy._catalogue import CATALOGUE

    info = CATALOGUE.get(model)
    if info is None:
        return DEFAULT_LIMITS
    return ModelLimits(
        max_inputs_per_request=info.max_inputs_per_request,
        max_tokens_per_request=info.max_tokens_per_request,
        max_tokens_per_input=info.max_tokens_per_input,
        source="catalogue",
    )


def limits_from_models_response(body: Any, model: str) -> ModelLimits | None:
    """Limits for `model` from a `GET /v1/models` body, or None when its entry has none.

    A limit the entry lacks is filled from the catalogue (or the defaults), so a server that
    publishes only some limits is still honoured for those.
    """
    if not isinstance(body, Mapping):
        return None
    entries = body.get("data")
    if not isinstance(entries, list):
        return None
    entry = next(
        (e for e in entries if isinstance(e, Mapping) and e.get("id") == model),
        None,
    )
    if entry is None:
        return None
    nested = entry.get("limits")
    sources: list[Mapping[str, Any]] = [entry]
    if isinstance(nested, Mapping):
        sources.insert(0, nested)
    found: dict[str, int] = {}
    for field, keys in _LIMIT_KEYS.items():
        for source in sources:
            value = next(
                (v for k in keys if (v := _positive_int(source.get(k))) is not None), None
            )
            if value is not None:
                found[field] = value
                break
    if not found:
        return None
    fallback = catalogue_limits(model)
    return ModelLimits(
        max_inputs_per_request=found.get(
            "max_inputs_per_request", fallback.max_inputs_per_request
        ),
        max_tokens_per_request=found.get(
            "max_tokens_per_request", fallback.max_tokens_per_request
        ),
        max_tokens_per_input=found.get("max_tokens_per_input", fallback.max_tokens_per_input),
        source="server",
    )


def pack_batches(
    texts: Sequence[str],
    limits: ModelLimits,
    batch_size: int | None = None,
) -> list[range]:
    """Split `texts` into consecutive ranges, each one request that fits the limits.

    Greedy in input order: a request takes texts until the next one would exceed the input count
    (`batch_size`, if smaller than the model's) or the token budget. Token counts are upper-bound
    estimates (UTF-8 bytes + specials), capped at the per-input limit because the server never
    counts more than that for one input (it truncates or refuses it). Consecutive ranges keep
    the merge trivial and the order certain.
    """
    # The same greedy splitter the proxy uses; imported on use (see `catalogue_limits`).
    from privatemode_proxy._batching import split_batches
    from privatemode_proxy._catalogue import estimate_tokens

    max_inputs = limits.max_inputs_per_request
    if batch_size is not None:
        max_inputs = min(max_inputs, batch_size)
    costs = [min(estimate_tokens(text), limits.max_tokens_per_input) for text in texts]
    ranges = split_batches(
        costs, max_inputs=max_inputs, max_tokens=limits.max_tokens_per_request
    )
    return [range(start, end) for start, end in ranges]
