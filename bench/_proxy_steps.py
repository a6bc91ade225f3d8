"""The proxy's CPU per request, step by step, in-process and without HTTP (part 1's breakdown).

Runs the proxy's own code, as it is in the checkout, on the bodies of the part-1 cases; the
encrypted upstream answer is produced by the protocol's `ResponseCipher` exactly as the
InstantUpstream harness produces it:

- encrypt:  `RequestCipher.encrypt_request` (what `UpstreamSession.post_encrypted` does);
- decrypt:  `UpstreamSession._decode` on an `httpx.Response` holding the encrypted answer;
- decode:   `openai.decode_embeddings` (base64 rows -> float32 matrix);
- encode:   `openai.encode_embeddings` + `orjson.dumps`, as `EmbeddingsService.embed` does.

Beside them, one proposed variant (defined here, benchmark code only): for a base64 client
whose answer needs no change, serialising upstream's base64 strings as they came, which skips
both decode and encode.
"""

from __future__ import annotations

import binascii
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import orjson
import pybase64
from _instant_upstream import MODELS, FixedVectors
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from privatemode_proxy import SessionConfig, UpstreamSession, pinned_manifest
from privatemode_proxy.openai import decode_embeddings, encode_embeddings
from privatemode_proxy.protocol import RequestCipher, ResponseCipher

_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def _time(func: Callable[[], Any], repeats: int) -> float:
    """Seconds of one call: the fastest of `repeats` (other load on the machine only ever adds
    time, so the minimum is the least disturbed estimate of CPU work)."""
    func()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return min(times)


def _session() -> UpstreamSession:
    """An UpstreamSession that is never started: only its `_decode` is used."""
    return UpstreamSession(SessionConfig(api_url="http://127.0.0.1:9", trusted_roots=(),
                                         manifest=pinned_manifest(b"{}")))


def _measure_case(texts: list[str], model: str, count: int, encoding: str,
                  repeats: int) -> dict[str, Any]:
    secret = bytes(range(32))
    secret_id = "bench-secret"
    vectors = FixedVectors(MODELS)
    session = _session()
    plain_request = orjson.dumps({"model": model, "input": texts[:count],
                                  "encoding_format": "base64"})

    def exchange() -> tuple[RequestCipher, httpx.Response]:
        client = RequestCipher(secret, secret_id)
        sealed = client.encrypt_request(plain_request)
        server = ResponseCipher(lambda _id: secret)
        server.decrypt_request(sealed)
        answer = {"id": "embd-x", "object": "list",
                  "data": orjson.Fragment(vectors.data_json(model, "base64", texts[:count])),
                  "model": model, "usage": {"prompt_tokens": 1, "total_tokens": 1}}
        body = server.encrypt_response_object(answer)
        return client, httpx.Response(200, content=body,
                                      headers={"Content-Type": "application/json"})

    client, upstream = exchange()
    parsed = session._decode(client, upstream).body
    matrix = decode_embeddings(parsed["data"], count)
    pairs: list[tuple[RequestCipher, httpx.Response]] = []

    def encrypt() -> None:
        RequestCipher(secret, secret_id).encrypt_request(plain_request)

    def decrypt() -> None:
        c, response = pairs.pop()
        session._decode(c, response)

    def respond(data: list[dict[str, Any]]) -> bytes:
        return orjson.dumps({"object": "list", "data": data, "model": model,
                             "usage": {"prompt_tokens": 1, "total_tokens": 1}}, option=_NUMPY)

    steps: dict[str, float] = {}
    floor = _floor(client_encoding=encoding, upstream=upstream.content, model=model,
                   plain_request=plain_request, secret=secret, repeats=repeats)
    steps.update(floor)
    steps["floor: total"] = sum(floor.values())
    steps["encrypt request"] = _time(encrypt, repeats)
    pairs[:] = [exchange() for _ in range(repeats + 1)]
    steps["decrypt + parse answer (UpstreamSession._decode)"] = _time(decrypt, repeats)
    steps["decode vectors (decode_embeddings)"] = _time(
        lambda: decode_embeddings(parsed["data"], count), repeats)
    steps["encode + serialise for the client"] = _time(
        lambda: respond(encode_embeddings(matrix, encoding)), repeats)
    if encoding == "base64":
        steps["proposed: upstream base64 re-used (no decode, no encode)"] = _time(
            lambda: respond(parsed["data"]), repeats)
    return {"upstream_bytes": len(upstream.content), "steps": steps}


def _transfer_seconds(nbytes: int, repeats: int) -> float:
    """CPU seconds for this process to receive `nbytes` over loopback TCP in large reads (the
    sender is a thread of this process: half the measured CPU is charged to the receiver)."""
    payload = b"x" * nbytes
    listener = socket.create_server(("127.0.0.1", 0))
    sender = socket.create_connection(listener.getsockname())
    receiver, _ = listener.accept()
    listener.close()
    buffer = bytearray(nbytes)

    def once() -> None:
        thread = threading.Thread(target=sender.sendall, args=(payload,))
        t0 = time.process_time()
        thread.start()
        view = memoryview(buffer)
        got = 0
        while got < nbytes:
            got += receiver.recv_into(view[got:], nbytes - got)
        thread.join()
        times.append((time.process_time() - t0) / 2)

    times: list[float] = []
    try:
        for _ in range(repeats + 1):
            once()
    finally:
        sender.close()
        receiver.close()
    return min(times[1:])


def _floor(*, client_encoding: str, upstream: bytes, model: str, plain_request: bytes,
           secret: bytes, repeats: int) -> dict[str, float]:
    """The least CPU any proxy needs for this answer in Python, step by step (seconds).

    Encrypt the request; cut the `data` token from the upstream body (no envelope parse);
    hex-decode it; AES-GCM; parse the decrypted rows; build the client's answer (base64: the
    upstream's strings re-indexed, nothing decoded; float: SIMD base64 decode + orjson floats);
    receive the upstream body and send the client's answer over loopback.
    """
    envelope = orjson.loads(upstream)
    token = envelope["data"]
    _id, _nonce, iv_hex, ct_hex = token.split(":")
    ciphertext_hex = ct_hex.encode()
    ciphertext = binascii.unhexlify(ciphertext_hex)
    iv = binascii.unhexlify(iv_hex)
    aad = binascii.unhexlify(_nonce) + struct.pack("<I", 0)
    aead = AESGCM(secret)
    plain = aead.decrypt(iv, ciphertext, aad)
    rows = orjson.loads(plain)

    def answer() -> bytes:
        if client_encoding == "base64":
            data = [{"object": "embedding", "index": i, "embedding": r["embedding"]}
                    for i, r in enumerate(rows)]
        else:
            flat = np.frombuffer(b"".join(pybase64.b64decode(r["embedding"], validate=True)
                                          for r in rows), "<f4").reshape(len(rows), -1)
            data = [{"object": "embedding", "index": i, "embedding": flat[i]}
                    for i in range(len(rows))]
        return orjson.dumps({"object": "list", "data": data, "model": model,
                             "usage": {"prompt_tokens": 1, "total_tokens": 1}}, option=_NUMPY)

    client_bytes = len(answer())
    made = "re-indexed strings" if client_encoding == "base64" else "decode + floats"
    return {
        "floor: encrypt request": _time(
            lambda: RequestCipher(secret, "bench-secret").encrypt_request(plain_request), repeats),
        "floor: locate the data token": _time(lambda: upstream.find(b'"data":"'), repeats),
        "floor: hex decode": _time(lambda: binascii.unhexlify(ciphertext_hex), repeats),
        "floor: AES-GCM": _time(lambda: aead.decrypt(iv, ciphertext, aad), repeats),
        "floor: parse decrypted rows": _time(lambda: orjson.loads(plain), repeats),
        f"floor: client answer ({made})": _time(answer, repeats),
        "floor: loopback receive + send": _transfer_seconds(len(upstream) + client_bytes,
                                                            max(3, repeats // 3)),
    }


def measure_steps(texts: list[str], cases: list[tuple[str, str, int, str]],
                  repeats: int = 15) -> list[dict[str, Any]]:
    """Seconds per step for each (label, model, inputs, client encoding) case."""
    out = []
    for label, model, count, encoding in cases:
        result = _measure_case(texts, model, count, encoding, repeats)
        result["label"] = label
        out.append(result)
    return out
