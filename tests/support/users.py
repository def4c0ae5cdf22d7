"""Users and rules for tests of the auth modes: alice, bob and root (an admin), each with the password
`<name>-pw`; everyone's own `{user}/**`, and `public/**` pullable by anyone, anonymous included."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import yaml

from registry.auth.users import Htpasswd
from registry.config import RuleSettings, Settings

USERS = ("alice", "bob", "root")
RULES = [
    RuleSettings(["anonymous"], "public/**", ["pull"]),
    RuleSettings(["*"], "{user}/**", ["*"]),
    RuleSettings(["group:admins"], "**", ["*"]),
    RuleSettings(["*"], "public/**", ["pull"]),
]


def auth_config(mode: str) -> str:
    """The `auth` section of a registry config file (YAML) in `mode`, with root an admin and RULES."""
    rules = [{"who": list(r.who), "repository": r.repository, "actions": list(r.actions)} for r in RULES]
    return yaml.safe_dump({"auth": {"mode": mode, "groups": {"admins": ["root"]}, "rules": rules}})


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def htpasswd_bytes(directory: Path) -> bytes:
    """The htpasswd file of USERS (hash it once per module or session: bcrypt is slow)."""
    path = directory / "htpasswd"
    users = Htpasswd(str(path))
    for user in USERS:
        users.set_password(user, f"{user}-pw")
    return path.read_bytes()


def configure(settings: Settings, mode: str, htpasswd: bytes) -> Settings:
    """`settings` in auth `mode` with USERS (their htpasswd file's bytes) and RULES."""
    settings.auth.mode = mode
    settings.auth.rules = RULES
    settings.auth.groups = {"admins": ["root"]}
    settings.auth.login_attempts = 3
    os.makedirs(settings.data_dir, exist_ok=True)
    with open(settings.htpasswd_path, "wb") as f:
        f.write(htpasswd)
    return settings
