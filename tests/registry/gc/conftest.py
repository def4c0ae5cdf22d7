"""The collector is tested on every backend: disk and SQLite, then S3 and PostgreSQL."""

from __future__ import annotations

import pytest

from registry.config import Settings


@pytest.fixture
def settings(any_backend_settings: Settings) -> Settings:
    return any_backend_settings
