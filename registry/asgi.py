"""The app factory of worker processes and of ASGI servers run by hand:
`uvicorn --factory registry.asgi:app`, `granian --interface asgi --factory registry.asgi:app`.

Settings come from `REGISTRY_SETTINGS` (JSON, set by `registry serve` for its workers), else from
the file named by `REGISTRY_CONFIG` (optional) and the `REGISTRY_*` variables.
"""

from __future__ import annotations

import json
import os

from starlette.applications import Starlette

from registry.app import create_app
from registry.config import from_dict, load_settings
from registry.logs import configure_logging
from registry.memory import cap_malloc_arenas

SETTINGS_VARIABLE = "REGISTRY_SETTINGS"


def app() -> Starlette:
    cap_malloc_arenas()  # before the worker starts threads of its own
    encoded = os.environ.get(SETTINGS_VARIABLE)
    settings = from_dict(json.loads(encoded)) if encoded else load_settings(os.environ.get("REGISTRY_CONFIG"))
    configure_logging(settings)
    return create_app(settings)
