"""The proxy's status page (`GET /`): what was attested, the secret's times, pacing; never a
secret nor a key."""

from __future__ import annotations

import html
from typing import Any


def _rate_limit_text(paced: dict[str, Any]) -> str:
    parts = []
    if paced.get("requests_limit") is not None:
        parts.append(f"{paced['requests_in_window']}/{paced['requests_limit']} requests")
    if paced.get("tokens_limit") is not None:
        parts.append(f"{paced['tokens_in_window']}/{paced['tokens_limit']} tokens")
    return (
        f"{', '.join(parts)} in the last {paced['window_seconds']:g} s; {paced['queued']} waiting"
    )


def status_html(status: dict[str, Any]) -> str:
    esc = html.escape
    rows: list[tuple[str, str]] = [
        ("Upstream", f"{status['upstream']} ({status.get('state')})"),
        ("Last upstream answer", str(status.get("last_upstream_answer_at") or "none yet")),
        (
            "Requests",
            f"{status.get('requests_in_progress', 0)} in progress, "
            f"{status.get('requests_waiting', 0)} waiting",
        ),
    ]
    att = status.get("attestation")
    if isinstance(att, dict):
        for key in (
            "tee",
            "product",
            "measurement",
            "measurements",
            "reported_tcb",
            "manifest_sha256",
            "verified_at",
        ):
            if key in att:
                value = att[key]
                text = (
                    ", ".join(f"{k}={v}" for k, v in value.items())
                    if isinstance(value, dict)
                    else str(value)
                )
                label = "TEE" if key == "tee" else key.replace("_", " ").capitalize()
                rows.append((label, text))
    else:
        rows.append(("Attestation", "not yet verified"))
    secret = status.get("secret")
    if isinstance(secret, dict):
        rows.append(("Secret obtained", str(secret["obtained_at"])))
        rows.append(("Secret used until", str(secret["use_until"])))
    else:
        rows.append(("Secret", "none yet"))
    if status.get("last_error"):
        rows.append(("Last error", str(status["last_error"])))
    for paced in status.get("rate_limits") or []:
        rows.append((f"Rate limit ({paced['key']})", _rate_limit_text(paced)))
    banner = (
        "<p><strong>LOCAL MODE</strong>: the upstream is the bundled local backend, whose "
        "self-made root is trusted. This is not Privatemode's service.</p>"
        if status.get("local_mode")
        else ""
    )
    table = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    ready = "ready" if status.get("ready") else "not ready"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>privatemode-proxy</title>"
        "<style>body{font-family:sans-serif;margin:2em}th{text-align:left;padding-right:1em}"
        "td{font-family:monospace}</style></head><body>"
        f"<h1>privatemode-proxy {esc(str(status.get('version')))}: {ready}</h1>{banner}"
        f"<table>{table}</table><p><a href='/?format=json'>JSON</a></p></body></html>"
    )
