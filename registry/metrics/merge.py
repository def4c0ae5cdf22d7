"""The workers' metric files merged into the Prometheus text format, cheaply enough to do on every scrape.

prometheus_client's own MultiProcessCollector parses every key of every file as JSON and builds an object per
sample on each scrape: about 5 ms of CPU for 450 samples from two workers. Here each file's entries are parsed
once (a file only ever grows: entries are appended, never moved), the values of all of them are read by one
precompiled `struct` call, and only the sums and the text are made per scrape. The result is the same as
MultiProcessCollector's (tests/registry/metrics/test_merge.py holds the two to each other).

The file format (prometheus_client/mmap_dict.py): a 4-byte count of the bytes used, 4 bytes of padding, then
entries: a 4-byte key length, the key (UTF-8 JSON `[metric, sample, labels, help]`), padding to 8 bytes, a double
value and a double timestamp. Files are named `<type>_<pid>.db`, gauges `gauge_<mode>_<pid>.db`.
"""

from __future__ import annotations

import glob
import json
import os
import struct
from dataclasses import dataclass, field

_USED = struct.Struct("=i")
_ENTRY_HEADER = 8


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    if value == float("-inf"):
        return "-Inf"
    if value != value:
        return "NaN"
    return repr(float(value))


@dataclass(frozen=True, slots=True)
class _Key:
    """An entry's key, parsed: its family, its sample's line up to the value (`name{a="b",...}`), and for a
    histogram bucket the label text without `le` (`a="b",` or ``) and its `le` (text and number)."""

    family: str
    help: str
    sample: str
    labels: tuple[tuple[str, str], ...]
    line: str
    le: str | None = None
    bound: float = 0.0


def _parse_key(raw: bytes) -> _Key:
    family, sample, labels, help_text = json.loads(raw)
    le = labels.pop("le", None) if sample.endswith("_bucket") else None
    pairs = tuple(sorted(labels.items()))
    if le is None:
        return _Key(family, help_text, sample, pairs, sample + _label_text(pairs))
    return _Key(family, help_text, sample, pairs, "".join(f"{p}," for p in _label_pairs(pairs)), le, float(le))


@dataclass
class _File:
    """What is known of one file: how many bytes of entries, their keys, and a Struct reading every
    (value, timestamp) at once."""

    used: int = _ENTRY_HEADER
    keys: list[_Key] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    reader: struct.Struct = field(default_factory=lambda: struct.Struct("="))

    def read(self, path: str, parsed: dict[bytes, _Key]) -> tuple[float, ...]:
        """The file's values and timestamps, alternating, in the order of `self.keys`."""
        with open(path, "rb") as f:
            head = f.read(_ENTRY_HEADER)
            if len(head) < _ENTRY_HEADER:
                return ()
            used = _USED.unpack_from(head)[0]
            f.seek(0)
            data = f.read(used)
        if used > self.used:
            self._learn(data, used, parsed)
        return self.reader.unpack_from(data)

    def _learn(self, data: bytes, used: int, parsed: dict[bytes, _Key]) -> None:
        pos = self.used
        while pos < used:
            length = _USED.unpack_from(data, pos)[0]
            pos += 4
            raw = data[pos : pos + length]
            key = parsed.get(raw)
            if key is None:
                key = parsed[raw] = _parse_key(raw)
            pos += length + (8 - (length + 4) % 8)
            self.keys.append(key)
            self.offsets.append(pos)
            pos += 16
        self.used = used
        layout, cursor = ["="], 0
        for offset in self.offsets:
            layout.append(f"{offset - cursor}xdd" if offset > cursor else "dd")
            cursor = offset + 16
        self.reader = struct.Struct("".join(layout))


@dataclass
class _Family:
    kind: str  # counter, gauge, histogram, summary
    help: str
    mode: str = ""  # a gauge's multiprocess mode
    values: dict[str, float] = field(default_factory=dict)  # by line up to the value
    stamps: dict[str, float] = field(default_factory=dict)
    # histogram buckets: by label text without `le`, then by `le`
    buckets: dict[str, dict[tuple[float, str], float]] = field(default_factory=dict)


class MergedFiles:
    """The metric files of `directory`, merged as MultiProcessCollector merges them (counters, histograms and
    `sum`/`livesum` gauges added up, `mostrecent` gauges the newest value, `min`/`max` the least or greatest,
    `all` gauges one series per process, with a `pid` label)."""

    def __init__(self, directory: str):
        self.directory = directory
        self._files: dict[str, _File] = {}
        self._parsed: dict[bytes, _Key] = {}

    def render(self) -> bytes:
        """Every family in the text format (version 0.0.4)."""
        families: dict[str, _Family] = {}
        paths = sorted(glob.glob(os.path.join(self.directory, "*.db")))
        for path in paths:
            parts = os.path.basename(path)[:-3].split("_")
            kind, mode, pid = parts[0], parts[1] if parts[0] == "gauge" else "", parts[-1]
            known = self._files.get(path)
            if known is None:
                known = self._files[path] = _File()
            try:
                numbers = known.read(path, self._parsed)
            except FileNotFoundError:  # a dead worker's live gauges, removed meanwhile
                continue
            for i, key in enumerate(known.keys):
                family = families.get(key.family)
                if family is None:
                    family = families[key.family] = _Family(kind, key.help, mode)
                value = numbers[2 * i]
                if key.le is not None:
                    series = family.buckets.get(key.line)
                    if series is None:
                        series = family.buckets[key.line] = {}
                    bucket = (key.bound, key.le)
                    series[bucket] = series.get(bucket, 0.0) + value
                    continue
                slot = key.line
                if mode in ("all", "liveall"):
                    slot = key.sample + _label_text((*key.labels, ("pid", pid)))
                if kind != "gauge" or mode in ("sum", "livesum"):
                    family.values[slot] = family.values.get(slot, 0.0) + value
                elif mode in ("mostrecent", "livemostrecent"):
                    stamp = numbers[2 * i + 1]
                    if stamp > family.stamps.get(slot, 0.0):  # never set: not shown
                        family.values[slot], family.stamps[slot] = value, stamp
                elif mode in ("max", "livemax"):
                    family.values[slot] = max(value, family.values.get(slot, value))
                elif mode in ("min", "livemin"):
                    family.values[slot] = min(value, family.values.get(slot, value))
                else:
                    family.values[slot] = value
        for stale in set(self._files) - set(paths):
            del self._files[stale]
        return "".join(_text(name, family) for name, family in families.items()).encode()


def _label_pairs(labels: tuple[tuple[str, str], ...]) -> list[str]:
    return [f'{name}="{_escape_label(value)}"' for name, value in labels]


def _label_text(labels: tuple[tuple[str, str], ...]) -> str:
    return "{" + ",".join(_label_pairs(labels)) + "}" if labels else ""


def _text(name: str, family: _Family) -> str:
    shown = f"{name}_total" if family.kind == "counter" else name
    help_text = family.help.replace("\\", "\\\\").replace("\n", "\\n")
    lines = [f"# HELP {shown} {help_text}\n# TYPE {shown} {family.kind}\n"]
    for line, value in family.values.items():
        if family.kind == "histogram" and line.startswith(f"{name}_count"):
            continue  # counted again from the buckets, as MultiProcessCollector does
        lines.append(f"{line} {_number(value)}\n")
    for labels, buckets in family.buckets.items():
        total = 0.0
        for (_, le), value in sorted(buckets.items()):
            total += value
            lines.append(f'{name}_bucket{{{labels}le="{le}"}} {_number(total)}\n')
        count_labels = "{" + labels[:-1] + "}" if labels else ""
        lines.append(f"{name}_count{count_labels} {_number(total)}\n")
    return "".join(lines)
