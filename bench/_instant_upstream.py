"""InstantUpstream: a BENCHMARK HARNESS, not a backend. The Privatemode server side with fixed,
precomputed vectors instead of a model, so that what is measured is the proxy and the clients.

It speaks the real protocol with the real code: `/privatemode/v1/attest` answers with
`LocalIdentity`'s evidence (the proxy verifies it as it verifies the local backend's),
`/privatemode/v1/secret` runs `serve_secret_exchange`, and `/v1/embeddings` decrypts the request
with `ResponseCipher` and encrypts the answer's fields with it. Only the model is missing: the
vectors are fixed unit vectors (row i of a seeded random matrix for input i), and each answer's
`data` JSON is built once per (model, encoding, count) and reused.

`/direct/v1/embeddings` is the baseline: the same harness answering plaintext OpenAI JSON, as an
OpenAI-compatible server would, with no encryption anywhere. Both endpoints check the request
the same way (model, input list, encoding) and serve the same vectors.

Run as a process: `python bench/_instant_upstream.py --workspace DIR [--port N]`; it prints one
JSON line ({"url": ...}) when it serves. GET /_bench/counts gives the requests per path.
"""

from __future__ import annotations

import argparse
import base64
import json
import uuid
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from privatemode_proxy.local._issuer import LocalIdentity
from privatemode_proxy.local._requestlog import RequestLog, RequestLogMiddleware
from privatemode_proxy.local._secretstore import SecretStore
from privatemode_proxy.protocol import (
    EMBEDDINGS_REQUEST_PLAIN_FIELDS,
    EMBEDDINGS_RESPONSE_PLAIN_FIELDS,
    FieldCipherError,
    ResponseCipher,
    serve_secret_exchange,
)

MODELS = {"all-minilm-l6-v2": 384, "qwen3-embedding-4b": 2560, "multilingual-e5-large": 1024}
MAX_INPUTS = 2048
_JSON = "application/json"


def _error(status: int, message: str, code: str | None = None) -> Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                      "code": code}}
    return Response(orjson.dumps(body), status, media_type=_JSON,
                    headers={"Privatemode-Encrypted": "false"})


class FixedVectors:
    """Fixed unit vectors per model and their `data` JSON, cached per (model, format, count)."""

    def __init__(self, models: dict[str, int], max_inputs: int = MAX_INPUTS,
                 cache_entries: int = 32) -> None:
        self.models = dict(models)
        self.max_inputs = max_inputs
        self._matrices: dict[str, np.ndarray[Any, np.dtype[np.float32]]] = {}
        self._data: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()
        self._cache_entries = cache_entries

    def matrix(self, model: str) -> np.ndarray[Any, np.dtype[np.float32]]:
        matrix = self._matrices.get(model)
        if matrix is None:
            rng = np.random.default_rng(zlib.crc32(model.encode()))
            matrix = rng.standard_normal((self.max_inputs, self.models[model]), dtype=np.float32)
            matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
            self._matrices[model] = matrix
        return matrix

    def rows(self, model: str, count: int) -> np.ndarray[Any, np.dtype[np.float32]]:
        """The vectors for `count` inputs: the fixed rows, cycled past `max_inputs`."""
        matrix = self.matrix(model)
        if count <= self.max_inputs:
            return matrix[:count]
        return np.resize(matrix, (count, matrix.shape[1]))

    def data_json(self, model: str, encoding: str, count: int) -> bytes:
        key = (model, encoding, count)
        cached = self._data.get(key)
        if cached is not None:
            self._data.move_to_end(key)
            return cached
        rows = self.rows(model, count)
        if encoding == "base64":
            items = [
                {"object": "embedding", "index": i,
                 "embedding": base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")}
                for i, row in enumerate(rows)
            ]
        else:
            items = [{"object": "embedding", "index": i, "embedding": row}
                     for i, row in enumerate(rows)]
        data = orjson.dumps(items, option=orjson.OPT_SERIALIZE_NUMPY)
        self._data[key] = data
        while len(self._data) > self._cache_entries:
            self._data.popitem(last=False)
        return data


class InstantUpstream:
    """The handlers; `app` is the ASGI app."""

    def __init__(self, identity: LocalIdentity, models: dict[str, int] | None = None) -> None:
        self.identity = identity
        self.vectors = FixedVectors(models or MODELS)
        self.secrets = SecretStore()
        self.log = RequestLog()
        routes = [
            Route("/privatemode/v1/attest", self.attest, methods=["POST"]),
            Route("/privatemode/v1/secret", self.secret, methods=["POST"]),
            Route("/v1/embeddings", self.embeddings_encrypted, methods=["POST"]),
            Route("/direct/v1/embeddings", self.embeddings_direct, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/direct/v1/models", self.models, methods=["GET"]),
            Route("/healthz", self.health, methods=["GET"]),
            Route("/_bench/counts", self.counts, methods=["GET"]),
            Route("/_bench/reset", self.reset, methods=["POST"]),
        ]
        inner = Starlette(routes=routes)
        self.app = RequestLogMiddleware(inner, self.log)

    # -- the handshake (real protocol code) ---------------------------------------------------

    async def attest(self, request: Request) -> Response:
        fields = orjson.loads(await request.body())
        nonce = base64.b64decode(fields["Nonce"], validate=True)
        document = self.identity.attestation_doc(nonce)
        return Response(orjson.dumps({"AttestationDoc": base64.b64encode(document).decode()}),
                        media_type=_JSON)

    async def secret(self, request: Request) -> Response:
        body, secret = serve_secret_exchange(
            await request.body(), self.identity.mesh_key, self.identity.mesh_cert_der
        )
        self.secrets.put(secret.id, secret.key)
        return Response(body, media_type=_JSON)

    # -- embeddings -------------------------------------------------------------------------------

    def _check(self, fields: dict[str, Any]) -> tuple[str, str, int] | Response:
        model = fields.get("model")
        if model not in self.vectors.models:
            return _error(404, f"model {model!r} not served by the instant upstream",
                          "model_not_found")
        inputs = fields.get("input")
        if isinstance(inputs, str):
            count = 1
        elif isinstance(inputs, list) and inputs and all(isinstance(t, str) for t in inputs):
            count = len(inputs)
        else:
            return _error(400, "'input' must be a string or a non-empty list of strings")
        encoding = fields.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            return _error(400, "'encoding_format' must be 'float' or 'base64'")
        dims = fields.get("dimensions")
        if dims is not None and dims != self.vectors.models[model]:
            return _error(400, "the instant upstream serves native dimensions only")
        return str(model), str(encoding), count

    @staticmethod
    def _usage(count: int) -> dict[str, int]:
        return {"prompt_tokens": 8 * count, "total_tokens": 8 * count}

    async def embeddings_encrypted(self, request: Request) -> Response:
        body = await request.body()
        cipher = ResponseCipher(self.secrets.get)
        try:
            plain = cipher.decrypt_request(body, EMBEDDINGS_REQUEST_PLAIN_FIELDS)
        except FieldCipherError as exc:
            status = 500 if "no secret for ID" in str(exc) else 400
            return _error(status, str(exc))
        checked = self._check(orjson.loads(plain))
        if isinstance(checked, Response):
            return checked
        model, encoding, count = checked
        response = {
            "id": f"embd-{uuid.uuid4().hex}",
            "object": "list",
            "data": orjson.Fragment(self.vectors.data_json(model, encoding, count)),
            "model": model,
            "usage": self._usage(count),
        }
        sealed = cipher.encrypt_response_object(response, EMBEDDINGS_RESPONSE_PLAIN_FIELDS)
        return Response(sealed, media_type=_JSON)

    async def embeddings_direct(self, request: Request) -> Response:
        fields = orjson.loads(await request.body())
        if not isinstance(fields, dict):
            return _error(400, "the body must be a JSON object")
        checked = self._check(fields)
        if isinstance(checked, Response):
            return checked
        model, encoding, count = checked
        response = {
            "object": "list",
            "data": orjson.Fragment(self.vectors.data_json(model, encoding, count)),
            "model": model,
            "usage": self._usage(count),
        }
        return Response(orjson.dumps(response), media_type=_JSON)

    async def models(self, request: Request) -> Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "instant-upstream"}
                for m in self.vectors.models]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type=_JSON,
                        headers={"Privatemode-Encrypted": "false"})

    async def health(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=_JSON)

    async def counts(self, request: Request) -> Response:
        return Response(orjson.dumps(self.log.snapshot()), media_type=_JSON)

    async def reset(self, request: Request) -> Response:
        self.log.clear()
        return Response(b"{}", media_type=_JSON)


def main() -> None:
    parser = argparse.ArgumentParser(description="InstantUpstream benchmark harness")
    parser.add_argument("--workspace", type=Path, required=True,
                        help="where LocalIdentity keeps its keys, root.pem and manifest.json")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    import uvicorn

    from privatemode_proxy._serving import free_port

    identity = LocalIdentity.load_or_create(args.workspace)
    harness = InstantUpstream(identity)
    for model in harness.vectors.models:  # build the matrices before serving
        harness.vectors.matrix(model)
    port = args.port or free_port(args.host)
    config = uvicorn.Config(harness.app, host=args.host, port=port, log_level="warning",
                            access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    url = f"http://{args.host}:{port}"

    async def serve() -> None:
        import asyncio

        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                await task
                return
            await asyncio.sleep(0.01)
        print(json.dumps({
            "url": url,
            "root_pem": str(identity.root_pem_path),
            "manifest": str(identity.manifest_path),
            "uvicorn_http": config.http,
            "uvicorn_loop": config.loop,
        }), flush=True)
        await task

    import asyncio

    asyncio.run(serve())


if __name__ == "__main__":
    main()
