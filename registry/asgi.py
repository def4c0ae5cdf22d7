"""An app factory for ASGI servers run by hand: `uvicorn --factory registry.asgi:app`.

Settings come from the file named by `REGISTRY_CONFIG` (optional) and `REGISTRY_*` variables.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette

from registry.app import create_app
from registry.config import load_settings
from registry.logs import configure_logging


def app() -> Starlette:
    settings = load_settings(os.environ.get("REGISTRY_CONFIG"))
    configure_logging(settings)
    return create_app(settings)
