"""Reading the servers' logs: the requests of their access lines, and the lines that signal trouble."""

from __future__ import annotations

import re
from typing import Any

from bench.servers import Server

# Access-log shapes: ours (`registry.access CLIENT METHOD PATH STATUS BYTES DURms`) and
# Distribution's logrus "response completed" lines at level info.
OURS_ACCESS = re.compile(r"registry\.access \S+ (?P<method>[A-Z]+) (?P<path>\S+) (?P<status>\d+) \d+ (?P<ms>[\d.]+)ms")
DIST_FIELD = re.compile(r'([\w.]+)=("(?:[^"\\]|\\.)*"|\S+)')
GO_DURATION_PART = re.compile(r"([\d.]+)(h|m(?!s)|s|ms|us|µs|ns)")
GO_UNIT_MS = {"h": 3_600_000.0, "m": 60_000.0, "s": 1000.0, "ms": 1.0, "us": 1e-3, "µs": 1e-3, "ns": 1e-6}
# Docker tries TLS first on every push/pull to a plain-HTTP registry; uvicorn logs that probe as a warning.
TLS_PROBE_LINE = "Invalid HTTP request received."


def go_duration_ms(text: str) -> float:
    """Milliseconds in a Go duration string such as `1.97ms`, `2.5s` or `1m3.2s`."""
    return sum(float(n) * GO_UNIT_MS[unit] for n, unit in GO_DURATION_PART.findall(text))


def parse_request(server: str, line: str) -> dict[str, Any] | None:
    """(method, path, status, duration ms) of one access-log line of server `server` (ours or distribution), or
    None for other lines."""
    if server == "ours":
        m = OURS_ACCESS.search(line)
        if m is None:
            return None
        return {"method": m["method"], "path": m["path"], "status": int(m["status"]), "ms": float(m["ms"])}
    if "response completed" not in line:
        return None
    fields = {k: v.strip('"') for k, v in DIST_FIELD.findall(line)}
    return {
        "method": fields.get("http.request.method", "?"),
        "path": fields.get("http.request.uri", "?").split("?")[0],
        "status": int(fields.get("http.response.status", "0")),
        "ms": go_duration_ms(fields.get("http.response.duration", "0s")),
    }


def route_kind(path: str) -> str:
    """A coarse route name for grouping requests: upload, blob, manifest, base or other."""
    if "/blobs/uploads/" in path or path.endswith("/blobs/uploads"):
        return "upload"
    if "/blobs/" in path:
        return "blob"
    if "/manifests/" in path:
        return "manifest"
    return "base" if path == "/v2/" else "other"


def is_problem(server: str, line: str, request: dict[str, Any] | None) -> bool:
    """Whether a log line signals trouble: a 5xx, a traceback or an error/warning not from a normal 404 probe."""
    if request is not None:
        return bool(request["status"] >= 500)
    if TLS_PROBE_LINE in line:
        return False
    if server == "ours":
        return any(word in line for word in (" ERROR ", " WARNING ", " CRITICAL ", "Traceback"))
    return bool(re.search(r"level=(error|fatal|panic)", line))


def read_new_log(server: Server) -> tuple[list[dict[str, Any]], list[str]]:
    """The requests and problem lines the server logged since the last call (TLS probes are not problems)."""
    with open(server.log_path, "rb") as f:
        f.seek(server.log_offset)
        data = f.read()
    server.log_offset += len(data)
    requests, problems = [], []
    for line in data.decode(errors="replace").splitlines():
        request = parse_request(server.name, line)
        if request is not None:
            requests.append(request)
        if is_problem(server.name, line, request):
            problems.append(line[:500])
    return requests, problems


def summarize_requests(requests: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per `METHOD route` group: count, total and max server-side milliseconds, and non-2xx/3xx count."""
    groups: dict[str, dict[str, float]] = {}
    for r in requests:
        g = groups.setdefault(f"{r['method']} {route_kind(r['path'])}", {"n": 0, "total_ms": 0.0, "max_ms": 0.0})
        g["n"] += 1
        g["total_ms"] = round(g["total_ms"] + r["ms"], 1)
        g["max_ms"] = round(max(g["max_ms"], r["ms"]), 1)
        if r["status"] >= 400:
            g["errors"] = g.get("errors", 0) + 1
    return groups
