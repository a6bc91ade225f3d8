"""`privatemode-proxy`: the command line.

Flags mirror the official Privatemode proxy (`--apiKey`, `--apiEndpoint`, `--port`, `--workspace`,
`--manifestPath`, `--tlsCertPath`/`--tlsKeyPath`, the NVIDIA OCSP flags, `--log-level`) plus
`--host`, `--local`, `--trustedRoot`, `--log-format` and the batching limits. The subcommand
`local-backend` runs the bundled local backend on its own.

Over 600 lines on purpose: every flag with its help text and the one-line refusal of each bad
value (a configuration error is one line and exit 2, never a traceback) live here, and nowhere
else parses user configuration.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

from privatemode_proxy import __version__
from privatemode_proxy._admission import AdmissionLimits
from privatemode_proxy._apikey import clean_api_key, key_forms, redact
from privatemode_proxy._batching import BatchLimits
from privatemode_proxy._coalescing import coalescing_for
from privatemode_proxy._guard import BrowserPolicy
from privatemode_proxy._pacing import rate_limits_for
from privatemode_proxy._server import create_proxy_app
from privatemode_proxy._service import DEFAULT_MAX_CLIENT_INPUTS, ProxyConfig
from privatemode_proxy._serving import (
    ConnectionLimits,
    PortInUseError,
    bind_socket,
    raise_open_file_limit,
    server_config,
)
from privatemode_proxy._session import (
    ManifestProvider,
    SessionConfig,
    pinned_manifest,
    refused_api_key,
)
from privatemode_proxy._workers import serve_in_workers, share_rate_limits

DEFAULT_API_ENDPOINT = "api.privatemode.ai:443"
DEFAULT_CDN_BASE_URL = "https://cdn.confidential.cloud/privatemode/v2"

logger = logging.getLogger("privatemode_proxy")


def api_base_url(endpoint: str) -> str:
    """`host:port` means HTTPS (as the official proxy has it); a full URL is taken as given."""
    endpoint = endpoint.strip()
    if "://" in endpoint:
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"--apiEndpoint must be host:port or an http(s) URL, got {endpoint!r}")
        return endpoint.rstrip("/")
    if not endpoint:
        raise ValueError("--apiEndpoint must not be empty")
    return f"https://{endpoint}".rstrip("/")


def read_api_key(value: str | None) -> str | None:
    """`--apiKey KEY` or `--apiKey @FILE` (the first line of FILE), stripped of surrounding
    whitespace; `ValueError` (never quoting the key) for a key that can't be an HTTP header."""
    if value is None or value.strip() == "":
        return None
    if value.startswith("@"):
        path = Path(value[1:]).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(
                f"--apiKey: cannot read the API key file {path}: {exc.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise ValueError(
                f"--apiKey: the API key file {path} is not UTF-8 text; it must hold only the key"
            ) from None
        key = text.strip().splitlines()[0] if text.strip() else ""
        if not key.strip():
            raise ValueError(f"--apiKey: the API key file {path} is empty")
        return clean_api_key(key, source=f"the file {path} (--apiKey)")
    return clean_api_key(value, source="--apiKey")


class ConfigError(ValueError):
    """A configuration problem: reported as one line naming the flag, exit code 2."""


def _fail(message: str) -> NoReturn:
    """One line on stderr, exit code 2 (as argparse does for a bad flag), no traceback."""
    print(f"privatemode-proxy: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}")
    return number


def _non_negative_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value!r}")
    return number


class _StoreGiven(argparse.Action):
    """Stores the value and notes that the flag was given (`<dest>_given`)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="privatemode-proxy",
        description=(
            "An OpenAI-compatible proxy to Privatemode: it verifies the backend's "
            "confidential-computing attestation, exchanges a secret with it, and sends every "
            "request only field-encrypted. Serves POST /v1/embeddings, GET /v1/models, "
            "GET /healthz and a status page at GET /."
        ),
        epilog=(
            "Subcommand: 'privatemode-proxy local-backend --host H --port P --workspace DIR' runs "
            "the bundled local backend alone (see 'privatemode-proxy local-backend --help'); use "
            "it with --apiEndpoint http://H:P --trustedRoot DIR/root.pem "
            "--manifestPath DIR/manifest.json."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    up = parser.add_argument_group("upstream")
    up.add_argument(
        "--apiKey",
        metavar="KEY|@FILE",
        help="API key for the Privatemode API, or @FILE to read it from FILE. Without a key "
        "the proxy does not authenticate with the API.",
    )
    up.add_argument(
        "--apiEndpoint",
        default=DEFAULT_API_ENDPOINT,
        metavar="HOST:PORT|URL",
        help="The Privatemode API: host:port (HTTPS) or a full URL such as "
        "http://127.0.0.1:9000 (default: %(default)s).",
    )
    up.add_argument(
        "--manifestPath",
        metavar="FILE",
        help="Trust exactly this manifest file. Without it the manifest is fetched from the "
        "Privatemode CDN and logged in WORKSPACE/manifests/.",
    )
    up.add_argument(
        "--cdnBaseURL",
        default=DEFAULT_CDN_BASE_URL,
        help="Base URL the manifest is fetched from when --manifestPath is not given "
        "(default: %(default)s).",
    )
    up.add_argument(
        "--trustedRoot",
        action="append",
        default=[],
        metavar="PEM",
        help="Also trust this root certificate (PEM) for attestation, in addition to AMD's: "
        "for a local backend or a self-hosted deployment run as its own process. Repeatable.",
    )
    up.add_argument(
        "--local",
        action="store_true",
        help="Start the bundled local backend in this process and use it as the upstream, "
        "trusting its self-made root and pinning its manifest. For development and tests: "
        "it is not Privatemode's service.",
    )
    up.add_argument(
        "--tee",
        choices=["snp", "tdx"],
        default=None,
        help="With --local: the evidence the local backend issues, AMD SEV-SNP (snp, the "
        "default) or Intel TDX (tdx, from its own Intel-like test root, trusted only here).",
    )
    up.add_argument(
        "--workspace",
        default=".",
        action=_StoreGiven,
        metavar="DIR",
        help="Directory for files the proxy writes: the manifest log (DIR/manifests/) and the "
        "certificate cache (default: %(default)s). With --local and this flag, the local "
        "backend's keys go to DIR/local-backend/ (without it: the per-user cache directory).",
    )
    up.add_argument(
        "--nvidiaOCSPAllowUnknown",
        type=_bool,
        nargs="?",
        const=True,
        default=True,
        metavar="BOOL",
        help="Accept GPUs whose NVIDIA OCSP status is unknown (the OCSP service could not be "
        "reached) (default: true).",
    )
    up.add_argument(
        "--nvidiaOCSPRevokedGracePeriod",
        type=_non_negative_int,
        default=48,
        metavar="HOURS",
        help="Accept NVIDIA certificates revoked less than this many hours ago; 0 rejects "
        "revoked certificates at once (default: %(default)s).",
    )
    srv = parser.add_argument_group("server")
    srv.add_argument(
        "--host",
        default="127.0.0.1",
        help="Address to listen on (default: %(default)s; 0.0.0.0 exposes the proxy to the "
        "network).",
    )
    srv.add_argument(
        "--port",
        type=_positive_int,
        default=8080,
        help="Port to listen on (default: %(default)s).",
    )
    srv.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="Serve from N processes, one core each (default: %(default)s). Each attests the "
        "upstream and holds its own secrets; rate limits are shared out among them.",
    )
    srv.add_argument("--tlsCertPath", metavar="FILE", help="Serve HTTPS with this certificate.")
    srv.add_argument("--tlsKeyPath", metavar="FILE", help="The key of --tlsCertPath.")
    srv.add_argument(
        "--allowedHosts",
        action="append",
        default=[],
        metavar="NAME",
        help="Also accept requests addressed (Host header) to NAME, e.g. a Docker service name; "
        "'*' accepts any. By default only IP addresses, localhost and --host are accepted "
        "(DNS rebinding protection). Repeatable.",
    )
    srv.add_argument(
        "--allowedOrigins",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="Let web pages from ORIGIN (e.g. https://app.example) call the proxy, with CORS. "
        "By default every browser request with an Origin is refused, so that no page you visit "
        "can spend your API key. Repeatable.",
    )
    srv.add_argument(
        "--maxActiveRequests",
        type=_positive_int,
        default=AdmissionLimits.max_active,
        metavar="N",
        help="Client requests worked on at once (default: %(default)s).",
    )
    srv.add_argument(
        "--maxQueuedRequests",
        type=_non_negative_int,
        default=AdmissionLimits.max_queued,
        metavar="N",
        help="Client requests waiting for a slot; beyond this, and after waiting "
        f"{AdmissionLimits.max_wait_seconds:g} s, the answer is 503 with Retry-After "
        "(default: %(default)s).",
    )
    srv.add_argument(
        "--maxClientInputs",
        type=_positive_int,
        default=DEFAULT_MAX_CLIENT_INPUTS,
        metavar="N",
        help="Inputs one client request may carry; more get a 400 (default: %(default)s).",
    )
    srv.add_argument(
        "--maxConnections",
        type=_positive_int,
        metavar="N",
        help="Open client connections; at the limit the oldest connection still sending its "
        "request head is closed (default: the open-file limit minus 256).",
    )
    srv.add_argument(
        "--headerTimeout",
        type=_positive_float,
        default=ConnectionLimits.head_timeout_seconds,
        metavar="SECONDS",
        help="Time a client has to send a request's headers (default: %(default)s).",
    )
    srv.add_argument(
        "--bodyTimeout",
        type=_positive_float,
        default=AdmissionLimits.body_timeout_seconds,
        metavar="SECONDS",
        help="Time a client has to send a request's body (default: %(default)s).",
    )
    up.add_argument(
        "--upstreamTimeout",
        type=_positive_float,
        default=SessionConfig.timeout_seconds,
        metavar="SECONDS",
        help="Longest wait for an upstream answer; a stalled upstream then shows as 'failing' "
        "on /healthz (default: %(default)s).",
    )
    lim = parser.add_argument_group("batching limits (on top of the model catalogue's)")
    lim.add_argument(
        "--maxInputsPerRequest",
        type=_positive_int,
        metavar="N",
        help="Split client requests into upstream requests of at most N inputs.",
    )
    lim.add_argument(
        "--maxTokensPerRequest",
        type=_positive_int,
        metavar="N",
        help="Split client requests into upstream requests of at most N tokens (counted "
        "exactly for the local model, over-estimated for others).",
    )
    lim.add_argument(
        "--maxConcurrentSubrequests",
        type=_positive_int,
        default=4,
        metavar="N",
        help="Upstream requests in flight at once for one split client request "
        "(default: %(default)s).",
    )
    rate = parser.add_argument_group(
        "rate limits (per upstream API key; default: the standard tier's 20 requests and "
        "100000 tokens per 60 s for api.privatemode.ai, none for other endpoints)"
    )
    rate.add_argument(
        "--rateLimitRequests",
        type=_non_negative_int,
        metavar="N",
        help="At most N upstream requests per key in any window; 0: no request limit.",
    )
    rate.add_argument(
        "--rateLimitTokens",
        type=_non_negative_int,
        metavar="T",
        help="At most T prompt tokens per key in any window; 0: no token limit.",
    )
    rate.add_argument(
        "--rateLimitWindow",
        type=_positive_int,
        metavar="S",
        help="The window in seconds (default: 60).",
    )
    rate.add_argument(
        "--coalesceWindowMs",
        type=_non_negative_int,
        metavar="MS",
        help="Pack small requests of one key that arrive within MS milliseconds (and, when "
        "paced, while they would wait anyway) into one upstream request; 0: off (default: 20 "
        "when rate limits apply, else off).",
    )
    log = parser.add_argument_group("logging")
    log.add_argument(
        "--log-level",
        "-l",
        default="info",
        choices=["debug", "info", "warn", "warning", "error"],
        help="Log level (default: %(default)s). Logs never contain API keys, secrets or "
        "input texts.",
    )
    log.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="Log line format (default: %(default)s).",
    )
    return parser


def build_local_backend_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="privatemode-proxy local-backend",
        description=(
            "Run the bundled local backend: the Privatemode server side (attestation with a "
            "self-made AMD-like certificate chain, HPKE secret exchange, encrypted "
            "/v1/embeddings) with a real embedding model, offline. On first start it writes "
            "WORKSPACE/root.pem (the root a proxy must trust) and WORKSPACE/manifest.json (the "
            "manifest a proxy must pin)."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="Address (default: %(default)s).")
    parser.add_argument(
        "--port", type=_positive_int, default=9000, help="Port (default: %(default)s)."
    )
    parser.add_argument(
        "--workspace",
        default=None,
        metavar="DIR",
        help="Where the backend keeps its keys, root.pem and manifest.json (default: "
        "local-backend/ in the per-user cache directory, e.g. ~/.cache/privatemode/, or "
        "$PRIVATEMODE_CACHE_DIR).",
    )
    parser.add_argument(
        "--log-level",
        "-l",
        default="info",
        choices=["debug", "info", "warn", "warning", "error"],
        help="Log level (default: %(default)s).",
    )
    parser.add_argument(
        "--tee",
        choices=["snp", "tdx"],
        default="snp",
        help="The evidence it issues: AMD SEV-SNP (default) or Intel TDX from its own Intel-like "
        "test root (then also writes WORKSPACE/tdx_root.pem).",
    )
    return parser


# -- logging -------------------------------------------------------------------------------------


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
        return json.dumps(entry, ensure_ascii=False)


class _RedactFilter(logging.Filter):
    """Belt and braces: no log line shows the API key in any form, whatever logged it."""

    def __init__(self, words: Sequence[str]) -> None:
        super().__init__()
        self._forms = key_forms(*words)

    def filter(self, record: logging.LogRecord) -> bool:
        if self._forms:
            message = record.getMessage()
            cleaned = redact(message, self._forms)
            if cleaned != message:
                record.msg, record.args = cleaned, None
            if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = redact(record.exc_text, self._forms)
        return True


def _adopt_uvicorn_loggers() -> None:
    """Route uvicorn's loggers through our handler (an in-process uvicorn may have set its own)."""
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uv = logging.getLogger(name)
        uv.handlers.clear()
        uv.propagate = True


def _level_name(level: str) -> str:
    return "warning" if level.lower() in ("warn", "warning") else level.lower()


def setup_logging(level: str, fmt: str, secrets: Sequence[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(_RedactFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_level_name(level).upper())
    _adopt_uvicorn_loggers()
    # httpx logs every request URL at INFO: noise, and the proxy logs what matters itself.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


# -- configuration -------------------------------------------------------------------------------


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _pinned_manifest_file(path: Path, cdn_base_url: str) -> bytes:
    """The bytes of a `--manifestPath` file, checked to be a Privatemode (Contrast) manifest."""
    from privatemode_proxy.attestation import Manifest

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"--manifestPath {path}: cannot read it: {exc.strerror}") from None
    problem: str | None = None
    try:
        manifest = Manifest.from_json(data)
    except ValueError as exc:
        problem = _one_line(exc)
    else:
        if not manifest.policies or not (manifest.snp or manifest.tdx):
            problem = "it has no Policies or no ReferenceValues"
    if problem is not None:
        raise ConfigError(
            f"--manifestPath {path} is not a Privatemode manifest ({problem}); pin the current "
            f"one with `curl -fsSo manifest.json {cdn_base_url.rstrip('/')}/manifest.json` and "
            "--manifestPath manifest.json, or leave the flag out to fetch it at every start"
        )
    return data


def _manifest_provider(args: argparse.Namespace, workspace: Path) -> ManifestProvider:
    if args.manifestPath:
        path = Path(args.manifestPath).expanduser()
        return pinned_manifest(_pinned_manifest_file(path, args.cdnBaseURL))
    from privatemode_proxy.attestation import ManifestSource

    source = ManifestSource.from_cdn(args.cdnBaseURL, workspace)
    return source.provider()


def _trusted_roots(paths: Sequence[str]) -> list[Any]:
    """AMD's roots plus every `--trustedRoot` file: an ASK+ARK bundle (AMD's KDS cert_chain, the
    local backend's root.pem), or one of AMD's own ARKs alone."""
    from privatemode_proxy.attestation import AttestationError, amd_roots, load_trusted_root
    from privatemode_proxy.attestation._x509 import pem_blocks

    bundled = list(amd_roots())
    roots = list(bundled)
    for name in paths:
        path = Path(name).expanduser()
        try:
            roots.extend(load_trusted_root(path))
            continue
        except AttestationError as exc:
            problem = _one_line(exc).removeprefix("TRUSTED_ROOT ").removeprefix(f"{path}: ")
        try:
            blocks = pem_blocks(path.read_bytes())
        except (OSError, ValueError):
            blocks = []
        if len(blocks) == 1 and blocks[0][0] == "CERTIFICATE":
            same = [r for r in bundled if r.ark_der == blocks[0][1]]
            if same:
                logger.info(
                    "--trustedRoot %s is AMD's %s ARK (trusted already)", path, same[0].product_line
                )
                continue
            problem = (
                "it holds one certificate, not one of AMD's ARKs; for another root give its ASK "
                "and ARK in one PEM file"
            )
        raise ConfigError(
            f"--trustedRoot {path}: {problem}. Expected a PEM file with an ASK then its ARK "
            "(AMD KDS cert_chain, or a local backend's root.pem), or one of AMD's ARKs alone"
        )
    return roots


def check_tls_files(cert: str | None, key: str | None) -> None:
    if (cert is None) != (key is None):
        raise ConfigError("--tlsCertPath and --tlsKeyPath must be given together")
    if cert is None or key is None:
        return
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"--tlsCertPath {cert} / --tlsKeyPath {key}: cannot use them "
            f"({_one_line(exc)}); give a PEM certificate and its PEM private key"
        ) from None


def build_config(args: argparse.Namespace, *, local_backend: Any = None) -> ProxyConfig:
    """The proxy configuration from parsed flags (and a started local backend for --local).

    Raises `ConfigError` (a `ValueError`) naming the flag for anything unusable.
    """
    from privatemode_proxy.attestation import (
        KdsCertificateCache,
        PcsCollateralCache,
        load_trusted_root,
    )

    check_tls_files(args.tlsCertPath, args.tlsKeyPath)
    if not args.nvidiaOCSPAllowUnknown and args.nvidiaOCSPRevokedGracePeriod > 0:
        raise ConfigError(
            "--nvidiaOCSPAllowUnknown=false with a revoked grace period > 0 is contradictory: "
            "set --nvidiaOCSPRevokedGracePeriod 0 or allow unknown statuses"
        )
    workspace = Path(args.workspace).expanduser()
    roots = _trusted_roots(args.trustedRoot)
    if local_backend is not None:
        api_url = str(local_backend.url)
        roots.extend(load_trusted_root(Path(local_backend.root_pem_path)))
        manifest = pinned_manifest(Path(local_backend.manifest_path).read_bytes())
        tdx = local_backend.identity.tdx_session_options()
    else:
        try:
            api_url = api_base_url(args.apiEndpoint)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        manifest = _manifest_provider(args, workspace)
        tdx = {"tdx_collateral": PcsCollateralCache(workspace)}
    session = SessionConfig(
        **tdx,
        api_url=api_url,
        api_key=read_api_key(args.apiKey),
        trusted_roots=tuple(roots),
        manifest=manifest,
        certificates=KdsCertificateCache(workspace),
        ocsp_allow_unknown=args.nvidiaOCSPAllowUnknown,
        ocsp_revoked_grace_period=timedelta(hours=args.nvidiaOCSPRevokedGracePeriod),
        timeout_seconds=args.upstreamTimeout,
    )
    limits = BatchLimits(
        max_inputs_per_request=args.maxInputsPerRequest,
        max_tokens_per_request=args.maxTokensPerRequest,
        max_concurrent_subrequests=args.maxConcurrentSubrequests,
    )
    counters = None
    if local_backend is not None:
        counters = {local_backend.model_id: local_backend.engine.count_tokens}
    rate_limits = rate_limits_for(
        api_url,
        requests=args.rateLimitRequests,
        tokens=args.rateLimitTokens,
        window_seconds=args.rateLimitWindow,
    )
    return ProxyConfig(
        session=session,
        limits=limits,
        admission=AdmissionLimits(
            max_active=args.maxActiveRequests,
            max_queued=args.maxQueuedRequests,
            body_timeout_seconds=args.bodyTimeout,
        ),
        browser=BrowserPolicy.of([*args.allowedHosts, args.host], args.allowedOrigins),
        max_client_inputs=args.maxClientInputs,
        local_mode=local_backend is not None,
        token_counters=counters,
        rate_limits=rate_limits,
        coalescing=coalescing_for(args.coalesceWindowMs, paced=rate_limits is not None),
    )


# -- entry points --------------------------------------------------------------------------------


def _run_local_backend(argv: Sequence[str]) -> int:
    args = build_local_backend_parser().parse_args(argv)
    setup_logging(args.log_level, "text")
    from privatemode_proxy._paths import local_backend_workspace
    from privatemode_proxy.local import run_local_backend

    run_local_backend(
        host=args.host,
        port=args.port,
        workspace=Path(args.workspace) if args.workspace else local_backend_workspace(),
        log_level=_level_name(args.log_level),
        tee=args.tee,
    )
    return 0


def _run_proxy(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        api_key = read_api_key(args.apiKey)
    except ValueError as exc:
        _fail(str(exc))
    setup_logging(args.log_level, args.log_format, secrets=[args.apiKey or "", api_key or ""])
    if args.tee is not None and not args.local:
        _fail("--tee: it chooses the local backend's evidence and applies only with --local")
    try:
        return _serve(args, api_key)
    except (ConfigError, PortInUseError) as exc:
        _fail(str(exc))


def _serve(args: argparse.Namespace, api_key: str | None) -> int:
    import uvicorn

    # Everything checkable without the upstream first, then the port: a mistake is reported in
    # well under a second, before any key generation or model loading.
    config: ProxyConfig | None = None
    if args.local:
        if args.workers > 1:
            raise ConfigError("--workers: local mode serves from one process; omit --workers")
        check_tls_files(args.tlsCertPath, args.tlsKeyPath)
        _trusted_roots(args.trustedRoot)
    else:
        config = build_config(args)
        problem = refused_api_key(config.session)  # the official proxy refuses to start too
        if problem is not None:
            raise ConfigError(f"--apiKey: {problem}")
        try:
            shared = share_rate_limits(config.rate_limits, args.workers)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        config = dataclasses.replace(config, rate_limits=shared)
    sock = bind_socket(args.host, args.port)
    raise_open_file_limit()
    logger.info("privatemode-proxy %s", __version__)
    backend: Any = None
    try:
        if args.local:
            from privatemode_proxy._paths import local_backend_workspace
            from privatemode_proxy.local import LocalBackend

            if getattr(args, "workspace_given", False):
                backend_dir = Path(args.workspace).expanduser() / "local-backend"
            else:
                backend_dir = local_backend_workspace()  # reused: keys made once per user
            backend = LocalBackend(backend_dir, tee=args.tee or "snp")
            try:
                backend.start()
            except OSError as exc:
                where = f": {exc.filename}" if exc.filename else ""
                raise ConfigError(
                    f"--workspace {args.workspace}: cannot start the local backend there "
                    f"({exc.strerror or _one_line(exc)}{where})"
                ) from None
            logger.warning(
                "\n%s\nLOCAL MODE: the upstream is the bundled local backend at %s.\n"
                "Its self-made root (%s) is trusted and its manifest pinned. This is NOT\n"
                "Privatemode's service and runs on no confidential-computing hardware.\n%s",
                "=" * 78,
                backend.url,
                backend.root_pem_path,
                "=" * 78,
            )
            config = build_config(args, local_backend=backend)
        elif api_key is None:
            logger.info("no --apiKey: each request is served with its app's own API key")
        assert config is not None
        scheme = "https" if args.tlsCertPath else "http"
        port = int(sock.getsockname()[1])
        logger.info(
            "listening on %s://%s:%d (upstream %s)",
            scheme,
            args.host,
            port,
            config.session.api_url,
        )
        ready = config

        def serve(_worker: int = 0) -> None:
            app = create_proxy_app(ready)
            _adopt_uvicorn_loggers()  # the local backend's server may have configured them
            server = uvicorn.Server(
                server_config(
                    app,
                    host=args.host,
                    port=port,
                    limits=ConnectionLimits(
                        head_timeout_seconds=args.headerTimeout,
                        max_connections=args.maxConnections,
                    ),
                    ssl_certfile=args.tlsCertPath,
                    ssl_keyfile=args.tlsKeyPath,
                    log_config=None,
                    access_log=args.log_level == "debug",
                    log_level=_level_name(args.log_level),
                )
            )
            try:
                server.run(sockets=[sock])
            except KeyboardInterrupt:
                pass

        if args.workers > 1:
            serve_in_workers(args.workers, serve)
        else:
            serve()
    finally:
        sock.close()
        if backend is not None:
            backend.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] == "local-backend":
        return _run_local_backend(arguments[1:])
    return _run_proxy(arguments)


if __name__ == "__main__":
    raise SystemExit(main())
