"""The web UI: server-rendered pages (Jinja2) under /ui/ over the registry's facade, with its own static files."""

from __future__ import annotations

from registry.ui.site import ui_routes

__all__ = ["ui_routes"]
