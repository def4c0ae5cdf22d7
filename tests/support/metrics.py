"""Reading what /metrics shows: the Prometheus text format parsed by prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    """One scrape's text: its samples by name and labels, and its metric families' names."""

    def __init__(self, text: str):
        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        self.families: set[str] = set()
        for family in text_string_to_metric_families(text):
            self.families.add(family.name)
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """The sample `name` with exactly `labels`; 0 when there is none (a series not yet counted)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def label_values(self, name: str, label: str) -> set[str]:
        """The values `label` takes in the samples `name`."""
        return {dict(ls)[label] for (n, ls) in self.samples if n == name and label in dict(ls)}

    def sample_names(self) -> set[str]:
        """Every sample name shown or announced: those with samples, and those of each `# TYPE` line (a
        labelled metric nothing counted yet has no sample), a histogram's with `_bucket`, `_sum`, `_count`."""
        names = {name for name, _ in self.samples}
        for line in self.text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(" ", 3)
                names |= {name + suffix for suffix in ("_bucket", "_sum", "_count")} if kind == "histogram" else {name}
        return names
