"""The rate-limit flags: on with the standard tier for the real service, off elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
from privatemode_proxy._cli import build_config, build_parser
from privatemode_proxy._pacing import RateLimits, rate_limits_for


@pytest.fixture
def manifest(vectors_dir: Path) -> Path:
    return vectors_dir / "snp" / "contrast" / "synthetic_manifest.json"


def _config(tmp_path: Path, manifest: Path, *flags: str) -> RateLimits | None:
    args = build_parser().parse_args(
        ["--workspace", str(tmp_path), "--manifestPath", str(manifest), *flags]
    )
    return build_config(args).rate_limits


def test_real_service_gets_the_standard_tier(tmp_path: Path, manifest: Path) -> None:
    assert _config(tmp_path, manifest) == RateLimits(20, 100_000, 60.0)
    explicit = _config(tmp_path, manifest, "--apiEndpoint", "api.privatemode.ai:443")
    assert explicit == RateLimits.standard_tier()


def test_other_endpoints_are_not_paced_unless_asked(tmp_path: Path, manifest: Path) -> None:
    assert _config(tmp_path, manifest, "--apiEndpoint", "http://127.0.0.1:9000") is None
    limits = _config(
        tmp_path,
        manifest,
        "--apiEndpoint",
        "http://127.0.0.1:9000",
        "--rateLimitRequests",
        "5",
        "--rateLimitWindow",
        "10",
    )
    assert limits == RateLimits(5, None, 10.0)


def test_flags_override_and_zero_turns_off(tmp_path: Path, manifest: Path) -> None:
    assert _config(
        tmp_path, manifest, "--rateLimitRequests", "100", "--rateLimitTokens", "0"
    ) == RateLimits(100, None, 60.0)
    assert _config(tmp_path, manifest, "--rateLimitRequests", "0", "--rateLimitTokens", "0") is None
    assert rate_limits_for("https://API.privatemode.ai", window_seconds=30) == RateLimits(
        20, 100_000, 30.0
    )


def test_bad_values_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--rateLimitWindow", "0"])
    assert "--rateLimitWindow" in capsys.readouterr().err
