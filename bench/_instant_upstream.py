"""InstantUpstream: a BENCHMARK HARNESS, not a backend. The Privatemode server side with fixed,
precomputed vectors instead of a model, so that what is measured is the proxy and the clients.

It speaks the real protocol with the real code: `/privatemode/v1/attest` answers with
`LocalIdentity`'s evidence (the proxy verifies it as it verifies the local backend's),
`/privatemode/v1/secret` runs `serve_secret_exchange`, and `/v1/embeddings` decrypts the request
with `ResponseCipher` and encrypts the answer's fields with it. Only the model is missing: the
vectors are fixed unit vectors (the row of a seeded random matrix picked by a CRC of the text),
each row serialised once at start, so that an answer is a join of ready pieces.

`/direct/v1/embeddings` is the baseline: the same harness answering plaintext OpenAI JSON, as an
OpenAI-compatible server would, with no encryption anywhere. Both endpoints check the request
the same way (model, input list, encoding) and serve the same vectors.

Run as a process: `python bench/_instant_upstream.py --workspace DIR [--port N]`; it prints one
JSON line ({"url": ...}) when it serves. GET /_bench/counts gives the requests per path.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import uuid
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from _common import exit_with_parent
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
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

MODELS = {"all-minilm-l6-v2": 384, "qwen3-embedding-4b": 2560, "multilingual-e5-large": 1024,
          "bench-unknown-384": 384}
"""The last is in no catalogue: what a client and the proxy do for a model they know nothing
about (the proxy passes it on unsplit; the client picks its request size on its own)."""
MAX_INPUTS = 2048
_JSON = "application/json"


def _error(status: int, message: str, code: str | None = None) -> Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                      "code": code}}
    return Response(orjson.dumps(body), status, media_type=_JSON,
                    headers={"Privatemode-Encrypted": "false"})


class FixedVectors:
    """Fixed unit vectors per model: text t gets row crc32(t) % rows of a seeded random matrix.

    So the same text gets the same vector however a client batches it, and two clients that
    return the same vectors in the same order agree exactly. Each row's JSON (a float array or a
    quoted base64 string) is serialised once; an answer is a join of those pieces.
    """

    def __init__(self, models: dict[str, int], rows: int = MAX_INPUTS) -> None:
        self.models = dict(models)
        self.rows = rows
        self._matrices: dict[str, np.ndarray[Any, np.dtype[np.float32]]] = {}
        self._pieces: dict[tuple[str, str], list[bytes]] = {}

    def matrix(self, model: str) -> np.ndarray[Any, np.dtype[np.float32]]:
        matrix = self._matrices.get(model)
        if matrix is None:
            rng = np.random.default_rng(zlib.crc32(model.encode()))
            matrix = rng.standard_normal((self.rows, self.models[model]), dtype=np.float32)
            matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
            self._matrices[model] = matrix
        return matrix

    def pieces(self, model: str, encoding: str) -> list[bytes]:
        key = (model, encoding)
        pieces = self._pieces.get(key)
        if pieces is None:
            matrix = self.matrix(model)
            if encoding == "base64":
                pieces = [b'"' + base64.b64encode(row.astype("<f4").tobytes()) + b'"'
                          for row in matrix]
            else:
                pieces = [orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY) for row in matrix]
            self._pieces[key] = pieces
        return pieces

    def row_of(self, text: str) -> int:
        return zlib.crc32(text.encode("utf-8", "surrogatepass")) % self.rows

    def vectors_for(self, model: str, texts: list[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        return self.matrix(model)[[self.row_of(t) for t in texts]]

    def data_json(self, model: str, encoding: str, texts: list[str]) -> bytes:
        """The `data` array of an OpenAI embeddings answer for `texts`, as JSON bytes."""
        pieces = self.pieces(model, encoding)
        rows = [self.row_of(t) for t in texts]
        parts = [b'{"object":"embedding","index":%d,"embedding":%s}' % (i, pieces[r])
                 for i, r in enumerate(rows)]
        return b"[" + b",".join(parts) + b"]"


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

    def _check(self, fields: dict[str, Any]) -> tuple[str, str, list[str]] | Response:
        model = fields.get("model")
        if model not in self.vectors.models:
            return _error(404, f"model {model!r} not served by the instant upstream",
                          "model_not_found")
        inputs = fields.get("input")
        if isinstance(inputs, str):
            texts = [inputs]
        elif isinstance(inputs, list) and inputs and all(isinstance(t, str) for t in inputs):
            texts = inputs
        else:
            return _error(400, "'input' must be a string or a non-empty list of strings")
        encoding = fields.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            return _error(400, "'encoding_format' must be 'float' or 'base64'")
        dims = fields.get("dimensions")
        if dims is not None and dims != self.vectors.models[model]:
            return _error(400, "the instant upstream serves native dimensions only")
        return str(model), str(encoding), texts

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
        model, encoding, texts = checked
        response = {
            "id": f"embd-{uuid.uuid4().hex}",
            "object": "list",
            "data": orjson.Fragment(self.vectors.data_json(model, encoding, texts)),
            "model": model,
            "usage": self._usage(len(texts)),
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
        model, encoding, texts = checked
        response = {
            "object": "list",
            "data": orjson.Fragment(self.vectors.data_json(model, encoding, texts)),
            "model": model,
            "usage": self._usage(len(texts)),
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
    exit_with_parent()

    import uvicorn
    from privatemode_proxy._serving import free_port

    identity = LocalIdentity.load_or_create(args.workspace)
    harness = InstantUpstream(identity)
    for model in harness.vectors.models:  # serialise the vectors before serving
        for encoding in ("float", "base64"):
            harness.vectors.pieces(model, encoding)
    port = args.port or free_port(args.host)
    config = uvicorn.Config(harness.app, host=args.host, port=port, log_level="warning",
                            access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    url = f"http://{args.host}:{port}"

    async def serve() -> None:
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
            "http": config.http_protocol_class.__name__,
            "loop": type(asyncio.get_running_loop()).__module__,
        }), flush=True)
        await task

    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(serve())


if __name__ == "__main__":
    main()
