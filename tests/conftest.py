"""Shared test setup: a clean environment for every test."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's render config or real cloud credentials."""
    monkeypatch.delenv("RENDER_CONFIG", raising=False)
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "CLOUDFLARE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def require(condition: bool, reason: str) -> None:
    """Skip outside CI when a real part is missing; under CI=true that is a failure."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the setup must install it)")
    pytest.skip(reason)
