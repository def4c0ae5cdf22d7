"""The workers' metric files merged into the Prometheus text format, cheaply enough to do on every scrape.

prometheus_client's own MultiProcessCollector parses every key of every file as JSON and builds an object per
sample on each scrape: about 5 ms of CPU for 450 samples from two workers. Here (0.2 ms) each file's entries are
parsed once (a file only ever grows: entries are appended, never moved) into the output series ("slots") they
add to, the values of all of them are read by one precompiled `struct` call, and a scrape only adds numbers into
slots and writes the lines of a plan made when the series last changed. The result is MultiProcessCollector's
(tests/registry/metrics/test_merge.py holds the two to each other).

The file format (prometheus_client/mmap_dict.py): a 4-byte count of the bytes used, 4 bytes of padding, then
entries: a 4-byte key length, the key (UTF-8 JSON `[metric, sample, labels, help]`), padding to 8 bytes, a double
value and a double timestamp. Files are named `<type>_<pid>.db`, gauges `gauge_<mode>_<pid>.db`.
"""

from __future__ import annotations

import glob
import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

_USED = struct.Struct("=i")
_HEADER_BYTES = 8
_ADDED = {"counter", "histogram", "summary", "gauge_sum", "gauge_livesum"}  # kinds whose values add up
_NEWEST = {"gauge_mostrecent", "gauge_livemostrecent"}


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _label_text(labels: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{name}="{_escape_label(value)}"' for name, value in labels) + "}" if labels else ""


def _number(value: float) -> str:
    if value - value == 0.0:  # finite
        return repr(value)
    if value != value:
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


@dataclass(frozen=True, slots=True)
class _Series:
    """One output series: its family, the kind of file it comes from (counter, histogram, gauge_<mode>...),
    the family's help, and its line up to the value; a histogram bucket also its `le` as a number and its
    labels without `le` (`group`: the buckets of one histogram series share it)."""

    family: str
    kind: str
    help: str
    line: str
    le: float | None = None
    group: str = ""


def _series(kind: str, pid: str, raw: bytes) -> _Series:
    """The series an entry (key `raw`) of a file of `kind` and process `pid` adds to."""
    family, sample, labels, help_text = json.loads(raw)
    pairs = sorted(labels.items())
    if kind in ("gauge_all", "gauge_liveall"):
        pairs.append(("pid", pid))
    if sample.endswith("_bucket") and "le" in labels:
        pairs.remove(("le", labels["le"]))
        line = f"{sample}{_label_text([*pairs, ('le', labels['le'])])}"
        return _Series(family, kind, help_text, line, float(labels["le"]), _label_text(pairs))
    return _Series(family, kind, help_text, f"{sample}{_label_text(pairs)}")


@dataclass
class _File:
    """What is known of one file: how many bytes of entries, the slot (output series) each entry adds to,
    and a Struct reading all their values and timestamps at once."""

    kind: str
    pid: str
    used: int = _HEADER_BYTES
    slots: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    reader: struct.Struct = field(default_factory=lambda: struct.Struct("="))

    def read(self, path: str) -> bytes:
        """The file's bytes in use."""
        with open(path, "rb") as f:
            head = f.read(_HEADER_BYTES)
            used = _USED.unpack_from(head)[0] if len(head) == _HEADER_BYTES else 0
            f.seek(0)
            return f.read(used)

    def learn(self, data: bytes, slot_of: Callable[[str, bytes], int]) -> None:
        """Parse the entries appended since the last call (`slot_of` gives each key's slot), and read their
        values too from now on."""
        pos = self.used
        while pos + 4 <= len(data):
            length = _USED.unpack_from(data, pos)[0]
            raw = data[pos + 4 : pos + 4 + length]
            pos += 4 + length + (8 - (length + 4) % 8)
            self.slots.append(slot_of(self.kind if self.kind not in ("gauge_all", "gauge_liveall") else self.pid, raw))
            self.offsets.append(pos)
            pos += 16
        self.used = pos
        layout, cursor = ["="], 0
        for offset in self.offsets:
            layout.append(f"{offset - cursor}xdd" if offset > cursor else "dd")
            cursor = offset + 16
        self.reader = struct.Struct("".join(layout))


@dataclass
class _Family:
    """How one family is written: its HELP and TYPE lines, its plain series (a histogram's `_sum`s), and a
    histogram's buckets by series (in order of `le`), each with the line of its `_count`."""

    header: str
    plain: list[int] = field(default_factory=list)
    buckets: list[tuple[str, list[int]]] = field(default_factory=list)


class MergedFiles:
    """The metric files of `directory`, merged as MultiProcessCollector merges them: counters, histograms and
    `sum`/`livesum` gauges added up, `mostrecent` gauges the newest value set, `max`/`min` the greatest or
    least, `all` gauges one series per process (a `pid` label). One render at a time."""

    def __init__(self, directory: str):
        self.directory = directory
        self._files: dict[str, _File] = {}
        self._slots: dict[tuple[str, bytes], int] = {}
        self._series: list[_Series] = []
        self._plan: list[_Family] | None = None  # remade when a series appears

    def _slot(self, source: str, raw: bytes) -> int:
        """The slot of key `raw` in files of `source` (a kind, or a process for `all` gauges)."""
        slot = self._slots.get((source, raw))
        if slot is None:
            kind = source if not source.isdigit() else "gauge_all"
            slot = self._slots[(source, raw)] = len(self._series)
            self._series.append(_series(kind, source, raw))
            self._plan = None
        return slot

    def render(self) -> bytes:
        """Every family in the text format (version 0.0.4)."""
        values: list[float] = []
        stamps: list[float] = []
        present: set[int] = set()
        paths = sorted(glob.glob(os.path.join(self.directory, "*.db")))
        for path in paths:
            known = self._files.get(path)
            if known is None:
                parts = os.path.basename(path)[:-3].split("_")
                kind = "_".join(parts[:2]) if parts[0] == "gauge" else parts[0]
                known = self._files[path] = _File(kind, parts[-1])
            try:
                data = known.read(path)
            except FileNotFoundError:  # a dead worker's live gauges, removed meanwhile
                continue
            if len(data) > known.used:
                known.learn(data, self._slot)
            if not known.slots:
                continue
            if len(values) < len(self._series):
                grown = len(self._series) - len(values)
                values += [0.0] * grown
                stamps += [0.0] * grown
            numbers = known.reader.unpack_from(data)
            present.update(known.slots)
            if known.kind in _ADDED:
                for slot, value in zip(known.slots, numbers[0::2], strict=True):
                    values[slot] += value
            else:
                _choose(known, numbers, values, stamps, present)
        for stale in self._files.keys() - set(paths):
            del self._files[stale]
        return self._text(values, present).encode()

    def _text(self, values: list[float], present: set[int]) -> str:
        if self._plan is None:
            self._plan = self._make_plan()
        lines = self._series
        out: list[str] = []
        for family in self._plan:
            out.append(family.header)
            for slot in family.plain:
                if slot in present:
                    value = values[slot]
                    out.append(f"{lines[slot].line} {repr(value) if value - value == 0.0 else _number(value)}\n")
            for count_line, buckets in family.buckets:
                total, shown = 0.0, False
                for slot in buckets:
                    if slot in present:
                        total += values[slot]
                        shown = True
                        out.append(f"{lines[slot].line} {repr(total) if total - total == 0.0 else _number(total)}\n")
                if shown:
                    out.append(f"{count_line} {_number(total)}\n")
        return "".join(out)

    def _make_plan(self) -> list[_Family]:
        """The families in order of first appearance, each with its series in output order."""
        plan: dict[str, _Family] = {}
        groups: dict[tuple[str, str], list[int]] = {}
        for slot, series in enumerate(self._series):
            family = plan.get(series.family)
            if family is None:
                kind = series.kind.split("_", 1)[0]
                shown = f"{series.family}_total" if kind == "counter" else series.family
                help_text = series.help.replace("\\", "\\\\").replace("\n", "\\n")
                family = plan[series.family] = _Family(f"# HELP {shown} {help_text}\n# TYPE {shown} {kind}\n")
            if series.le is None:
                family.plain.append(slot)
                continue
            group = groups.get((series.family, series.group))
            if group is None:
                group = groups[(series.family, series.group)] = []
                family.buckets.append((f"{series.family}_count{series.group}", group))
            group.append(slot)
        for group in groups.values():
            group.sort(key=lambda slot: self._series[slot].le or 0.0)
        return list(plan.values())


def _choose(
    known: _File, numbers: tuple[float, ...], values: list[float], stamps: list[float], present: set[int]
) -> None:
    """Gauges that keep one process's value: the newest (a gauge never set, timestamp 0, is not shown), the
    greatest, the least, or each process's own (`all`: a series per process)."""
    for i, slot in enumerate(known.slots):
        value, stamp = numbers[2 * i], numbers[2 * i + 1]
        if known.kind in _NEWEST:
            if stamp > stamps[slot]:
                values[slot], stamps[slot] = value, stamp
        elif stamps[slot] == 0.0 or known.kind in ("gauge_all", "gauge_liveall"):
            values[slot], stamps[slot] = value, 1.0
        elif known.kind in ("gauge_max", "gauge_livemax"):
            values[slot] = max(values[slot], value)
        elif known.kind in ("gauge_min", "gauge_livemin"):
            values[slot] = min(values[slot], value)
    if known.kind in _NEWEST:
        present.difference_update(slot for slot in known.slots if stamps[slot] == 0.0)
