"""Capacity model for national scale: a scenario times measured costs per item.

Reads the benchmark rows (`.tmp/bench/results.jsonl`, else the table in README.md or
BENCHMARKS.md): the per-1,000-item costs of `tests/bench/bench_costs.py` (Kafka records and bytes
per topic, MongoDB writes and stored bytes per collection, CPU seconds per process, per mode),
its one-partition consumer throughput and bytes per bank item, and the real-model judge bench's
tokens per verdict. The scenario (institutions, submissions per cycle, bank size, cycle length,
peak factor, API-mode share, track mix; pool size and judge-scored share from the rotator's
registry) and two stated assumptions (cores per replica and target utilisation; a 72B judge
replica's token throughput, which no bench here can measure) turn them into: events/s per topic
(mean and peak) and partitions, MongoDB writes/s and storage per cycle per collection, replicas
per service, judge tokens per day and judge GPUs. Every output line names the rows it comes from.

    python -m tests.bench.capacity [--submissions 2000 ...] [--markdown] [--readme README.md]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from tests.bench.results import RESULTS

COSTS = "costs"
"""Bench name of tests/bench/bench_costs.py rows."""
JUDGE_BENCH = "judge (real 270M model)"
TOKENS_PER_VERDICT = "tokens per verdict (json_object_schema)"
MODES = ("upload", "api")
CONSUMERS = {
    "submission-created": "dispatcher",
    "response-recorded": "metric_scorer",
    "judge-requested": "judge_scorer",
    "item-scored": "aggregator",
    "submission-completed": "gateway",
    "dispatch-progressed": "gateway",
}
"""The consumer service of each topic (README "Services"); its replicas bound the partitions
from below (a replica without a partition idles)."""
JUDGE_TOPICS = frozenset({"judge-requested", "judge-requested.dlq"})
JUDGE_COLLECTIONS = frozenset({"main.judge_cache", "main.judgments", "main.parked", "main.reviews"})
JUDGE_PROCESSES = frozenset({"judge_scorer"})
"""Costs that follow judge-scored items, not items: taken from the API-mode run (the only one
with judged items) per judged item and charged to the judged items of both modes."""
DATASTORES = frozenset({"kafka", "mongo"})
CAPACITY_BEGIN, CAPACITY_END = "<!-- capacity-table:begin -->", "<!-- capacity-table:end -->"
ROW = re.compile(r"^\|\s*([^|]+?)\s*\|\s*([^|]+?)\s*\|\s*([-0-9.,]+)\s+([^|]*?)\s*\|")


class MissingMeasurement(LookupError):
    """A figure the model needs is in no benchmark row."""


@dataclass(frozen=True)
class Row:
    """One measured figure and where it was read."""

    bench: str
    figure: str
    value: float
    unit: str
    source: str

    @property
    def ref(self) -> str:
        return f"[{self.bench}: {self.figure} = {_fmt(self.value)} {self.unit}]"


class Measurements:
    """The benchmark rows, by (bench, figure)."""

    def __init__(self, rows: Iterable[Row]) -> None:
        self.rows = {(r.bench, r.figure): r for r in rows}
        self.sources = sorted({r.source for r in self.rows.values()})

    def get(self, bench: str, figure: str) -> Row:
        try:
            return self.rows[bench, figure]
        except KeyError:
            where = ", ".join(self.sources) or "no benchmark results at all"
            hint = (
                "run `python -m tests.bench.bench_costs` (part of `make bench`)"
                if bench == COSTS
                else "run `make bench` (or `make bench-llm` for the real-model judge rows)"
            )
            raise MissingMeasurement(
                f"the capacity model needs the measured row '{bench} | {figure}', which is not "
                f"in {where}: {hint}"
            ) from None

    def family(self, kind: str, mode: str) -> dict[str, Row]:
        """Rows "<kind>, <name> (<mode>)" of the cost bench, by name."""
        pattern = re.compile(rf"^{re.escape(kind)}, (.+) \({re.escape(mode)}\)$")
        found: dict[str, Row] = {}
        for (bench, figure), row in self.rows.items():
            match = pattern.match(figure) if bench == COSTS else None
            if match:
                found[match.group(1)] = row
        return found

    def bank(self) -> dict[str, Row]:
        return {
            figure.removeprefix("bank stored, "): row
            for (bench, figure), row in self.rows.items()
            if bench == COSTS and figure.startswith("bank stored, ")
        }


def from_jsonl(path: Path) -> list[Row]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            rows.append(Row(r["bench"], r["figure"], float(r["value"]), r["unit"], str(path)))
    return rows


def from_table(path: Path) -> list[Row]:
    """Rows of a benchmark table as `python -m tests.bench.results` writes it (values rounded)."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match and match.group(1) != "benchmark":
            bench, figure, value, unit = match.groups()
            try:
                number = float(value.replace(",", ""))
            except ValueError:  # a note row ("-"), not a measurement
                continue
            rows.append(Row(bench, figure, number, unit, str(path)))
    return rows


def load(results: Path = RESULTS, tables: Iterable[Path] = ()) -> Measurements:
    """The latest rows of results (JSON lines), else of the first table that has the cost rows
    (the README's table leaves them to BENCHMARKS.md), else of the first that has any."""
    if results.exists():
        rows = from_jsonl(results)
        if rows:
            return Measurements(rows)
    found = [rows for table in tables if table.exists() and (rows := from_table(table))]
    for rows in found:
        if any(r.bench == COSTS for r in rows):
            return Measurements(rows)
    return Measurements(found[0] if found else [])


# --- the scenario ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """What national scale means here. Pool size and judged share: from the registry unless set."""

    institutions: int = 500
    submissions_per_cycle: int = 2000
    bank_items: int = 700_000
    cycle_days: float = 30.0
    peak_factor: float = 10.0
    """Busiest hour's rate / the cycle's mean rate (submissions cluster before a cycle closes)."""
    api_share: float = 0.5
    """Share of submissions in API mode (the rest upload answers)."""
    track_mix: Mapping[str, float] = field(default_factory=lambda: {"llm": 1.0})
    """Share of submissions per track."""
    items_per_submission: float | None = None
    judged_share: float | None = None
    judges_per_item: int = 1
    """Judges on the panel (each judges every judge-scored item)."""
    cores_per_replica: float = 1.0
    target_utilisation: float = 0.6
    min_replicas: int = 2
    judge_tokens_per_s: float = 4000.0
    """Prompt + completion tokens/s one judge replica serves (an assumption, see README)."""
    gpus_per_judge_replica: int = 4

    def scaled(self, factor: float) -> Scenario:
        return replace(
            self,
            submissions_per_cycle=round(self.submissions_per_cycle * factor),
            bank_items=round(self.bank_items * factor),
        )


def registry_pool(track_mix: Mapping[str, float]) -> tuple[float, float, str]:
    """(items per submission, judge-scored share, a note) from the rotator's registry: the
    pool lines of each track's datasets and of those whose metric has a judge component."""
    from rotator.core.registry import load_registry
    from rotator.registry import DEFAULT_REGISTRY_PATH

    registry = load_registry(DEFAULT_REGISTRY_PATH)
    total = sum(track_mix.values())
    items = judged = 0.0
    notes = []
    for track, share in track_mix.items():
        lines = judged_lines = 0
        for dataset in registry.datasets_in(track):
            for part in dataset.parts:
                lines += part.pool_lines
                judged_lines += part.pool_lines if "judge" in part.metric_components else 0
        items += share / total * lines
        judged += share / total * judged_lines
        notes.append(f"{track} {share / total:.0%}: {lines} lines, {judged_lines} judged")
    return items, judged / items, f"registry {DEFAULT_REGISTRY_PATH.name} ({'; '.join(notes)})"


# --- the model ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    section: str
    name: str
    value: float
    unit: str
    source: str
    peak: float | None = None


@dataclass(frozen=True)
class Flow:
    """Items per cycle and per second, per mode and judged."""

    items: dict[str, float]
    judged: float
    seconds: float
    peak_factor: float

    def mean(self, per_cycle: float) -> float:
        return per_cycle / self.seconds

    def peak(self, per_cycle: float) -> float:
        return per_cycle / self.seconds * self.peak_factor


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def _per_cycle(
    m: Measurements, kind: str, flow: Flow, judged_kinds: frozenset[str]
) -> dict[str, tuple[float, list[Row]]]:
    """Amount per cycle of every "<kind>, <name>" figure: items of each mode x its per-1,000
    cost; names in judged_kinds: judged items x the API run's cost per judged item."""
    share = m.get(COSTS, "judged share of items (api)")
    totals: dict[str, tuple[float, list[Row]]] = {}
    for mode in MODES:
        m.get(COSTS, f"items measured ({mode})")  # the mode's run is there at all
        for name, row in m.family(kind, mode).items():
            if name in judged_kinds:
                if mode != "api":
                    continue
                amount = flow.judged * row.value / 1000 / (share.value / 100)
                sources = [row, share]
            else:
                amount = flow.items[mode] * row.value / 1000
                sources = [row]
            total, rows = totals.get(name, (0.0, []))
            totals[name] = (total + amount, rows + sources)
    return totals


def _refs(rows: Iterable[Row]) -> str:
    seen: dict[str, None] = {}
    for r in rows:
        seen.setdefault(r.ref, None)
    return "; ".join(seen)


def model(m: Measurements, s: Scenario) -> list[Line]:
    """Every output of the capacity model, each with the measured rows it comes from."""
    if s.items_per_submission is None or s.judged_share is None:
        items_per, judged_share, pool_note = registry_pool(s.track_mix)
        items_per = s.items_per_submission or items_per
        judged_share = judged_share if s.judged_share is None else s.judged_share
    else:
        items_per, judged_share, pool_note = s.items_per_submission, s.judged_share, "scenario"
    per_cycle_items = s.submissions_per_cycle * items_per
    flow = Flow(
        items={"api": per_cycle_items * s.api_share, "upload": per_cycle_items * (1 - s.api_share)},
        judged=per_cycle_items * judged_share,
        seconds=s.cycle_days * 86400,
        peak_factor=s.peak_factor,
    )
    lines = [
        Line("scenario", "items per submission", items_per, "items", pool_note),
        Line("scenario", "judge-scored share of items", 100 * judged_share, "%", pool_note),
        Line(
            "scenario",
            "submissions per institution per cycle",
            s.submissions_per_cycle / s.institutions,
            "submissions",
            "scenario",
        ),
        Line(
            "scenario",
            "items per cycle",
            per_cycle_items,
            "items",
            "scenario x items per submission",
        ),
        Line(
            "scenario",
            "items/s (peak = mean x peak factor)",
            flow.mean(per_cycle_items),
            "items/s",
            "scenario",
            peak=flow.peak(per_cycle_items),
        ),
    ]

    # Kafka: events/s and bytes/s per topic, partitions.
    events = _per_cycle(m, "kafka events", flow, JUDGE_TOPICS)
    sizes = _per_cycle(m, "kafka bytes", flow, JUDGE_TOPICS)
    consumer = m.get(COSTS, "kafka consumer per partition (fetch + decode)")
    cpu = _per_cycle(m, "cpu", flow, JUDGE_PROCESSES)
    replicas: dict[str, int] = {}
    for process, (cpu_s, rows) in sorted(cpu.items()):
        cores_peak = flow.peak(cpu_s)
        needed = math.ceil(cores_peak / (s.cores_per_replica * s.target_utilisation))
        if process in DATASTORES:
            lines.append(
                Line(
                    "cpu",
                    f"{process}: cores (local stand-in; an upper bound)",
                    flow.mean(cpu_s),
                    "cores",
                    _refs(rows),
                    peak=cores_peak,
                )
            )
            continue
        replicas[process] = max(s.min_replicas, needed)
        lines.append(
            Line(
                "replicas",
                f"{process}: replicas (peak cores / {s.cores_per_replica:g} core x "
                f"{s.target_utilisation:.0%}, at least {s.min_replicas})",
                replicas[process],
                "replicas",
                f"{_refs(rows)}; peak cores {_fmt(cores_peak)}",
            )
        )
    for topic, (count, rows) in sorted(events.items()):
        lines.append(
            Line(
                "kafka",
                f"{topic}: events/s",
                flow.mean(count),
                "events/s",
                _refs(rows),
                peak=flow.peak(count),
            )
        )
        size, size_rows = sizes.get(topic, (0.0, []))
        bytes_peak = flow.peak(size) * 1024  # rows are KiB
        by_throughput = math.ceil(bytes_peak / (consumer.value * 1e6 * s.target_utilisation))
        consumer_replicas = replicas.get(CONSUMERS.get(topic.removesuffix(".dlq"), ""), 1)
        lines.append(
            Line(
                "kafka",
                f"{topic}: partitions (peak bytes/s / one consumer at "
                f"{s.target_utilisation:.0%}, at least its consumer's replicas)",
                max(1, by_throughput, consumer_replicas),
                "partitions",
                f"{_refs(size_rows + [consumer])}; peak {_fmt(bytes_peak / 1e6)} MB/s",
            )
        )

    # MongoDB: writes/s and storage per cycle per collection; the bank.
    writes = _per_cycle(m, "mongo writes", flow, JUDGE_COLLECTIONS)
    stored = _per_cycle(m, "mongo stored", flow, JUDGE_COLLECTIONS)
    for coll, (count, rows) in sorted(writes.items()):
        lines.append(
            Line(
                "mongo",
                f"{coll}: writes/s",
                flow.mean(count),
                "writes/s",
                _refs(rows),
                peak=flow.peak(count),
            )
        )
    total_writes = sum(c for c, _ in writes.values())
    lines.append(
        Line(
            "mongo",
            "all collections: writes/s",
            flow.mean(total_writes),
            "writes/s",
            "sum of the lines above",
            peak=flow.peak(total_writes),
        )
    )
    for coll, (kib, rows) in sorted(stored.items()):
        lines.append(Line("mongo", f"{coll}: stored per cycle", kib / 2**20, "GiB", _refs(rows)))
    total_stored = sum(k for k, _ in stored.values()) / 2**20
    lines.append(Line("mongo", "all collections: stored per cycle", total_stored, "GiB", "sum"))
    bank = m.bank()
    if bank:
        bank_gib = sum(r.value for r in bank.values()) * s.bank_items / 1000 / 2**20
        lines.append(
            Line(
                "mongo",
                "task bank: stored once (not per cycle)",
                bank_gib,
                "GiB",
                f"{s.bank_items:,} bank items x {_refs(bank.values())}",
            )
        )

    # The judge: tokens per day, GPUs.
    tokens = m.get(JUDGE_BENCH, TOKENS_PER_VERDICT)
    verdicts = flow.judged * s.judges_per_item
    per_day = verdicts * tokens.value / s.cycle_days
    lines.append(
        Line(
            "judge",
            f"verdicts per day ({s.judges_per_item} judge(s) per judged item)",
            verdicts / s.cycle_days,
            "verdicts/day",
            f"scenario x judged share ({pool_note})",
        )
    )
    lines.append(Line("judge", "judge tokens per day", per_day, "tokens/day", tokens.ref))
    tokens_s_mean, tokens_s_peak = per_day / 86400, per_day / 86400 * s.peak_factor
    lines.append(
        Line(
            "judge",
            "judge tokens/s",
            tokens_s_mean,
            "tokens/s",
            tokens.ref,
            peak=tokens_s_peak,
        )
    )
    assumption = (
        f"assumed {_fmt(s.judge_tokens_per_s)} tokens/s per {s.gpus_per_judge_replica}-GPU "
        f"replica at {s.target_utilisation:.0%}; {tokens.ref}"
    )
    for label, rate in (("at the peak hour", tokens_s_peak), ("at the daily mean", tokens_s_mean)):
        judge_replicas = max(1, math.ceil(rate / (s.judge_tokens_per_s * s.target_utilisation)))
        lines.append(
            Line(
                "judge",
                f"72B judge GPUs, sized {label} ({judge_replicas} replicas)",
                judge_replicas * s.gpus_per_judge_replica,
                "GPUs",
                assumption,
            )
        )
    return lines


def render(lines: list[Line], markdown: bool) -> str:
    if markdown:
        out = ["| output | mean | peak | from (measured input) |", "|---|---:|---:|---|"]
        for line in lines:
            peak = f"{_fmt(line.peak)} {line.unit}" if line.peak is not None else "-"
            out.append(
                f"| {line.section}: {line.name} | {_fmt(line.value)} {line.unit} | {peak} | "
                f"{line.source.replace('|', '/')} |"
            )
        return "\n".join(out)
    out = []
    for line in lines:
        peak = f" (peak {_fmt(line.peak)})" if line.peak is not None else ""
        out.append(
            f"{line.section:8s} {line.name}: {_fmt(line.value)} {line.unit}{peak}\n"
            f"{'':8s}   from {line.source}"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument(
        "--table",
        type=Path,
        action="append",
        help="benchmark tables to read when --results is absent (default README.md, BENCHMARKS.md)",
    )
    defaults = Scenario()
    for f in fields(Scenario):
        if f.name in ("track_mix",):
            continue
        default = getattr(defaults, f.name)
        kind = float if f.name in ("items_per_submission", "judged_share") else type(default)
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=default)
    parser.add_argument(
        "--track-mix",
        default="llm=1",
        help="share of submissions per track, e.g. llm=0.7,agent=0.3",
    )
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--readme", type=Path, help="replace the table between its markers")
    args = parser.parse_args(argv)
    mix = {k: float(v) for k, v in (p.split("=") for p in args.track_mix.split(","))}
    scenario = Scenario(
        **{f.name: getattr(args, f.name) for f in fields(Scenario) if f.name != "track_mix"},
        track_mix=mix,
    )
    measurements = load(args.results, args.table or [Path("README.md"), Path("BENCHMARKS.md")])
    try:
        lines = model(measurements, scenario)
    except MissingMeasurement as exc:
        print(f"capacity: {exc}", file=sys.stderr)
        return 1
    print(f"Measured rows from {', '.join(measurements.sources)}; scenario {scenario}\n")
    print(render(lines, args.markdown))
    if args.readme is not None:
        text = args.readme.read_text(encoding="utf-8")
        if CAPACITY_BEGIN in text and CAPACITY_END in text:
            head, rest = text.split(CAPACITY_BEGIN, 1)
            _, tail = rest.split(CAPACITY_END, 1)
            table = render(lines, markdown=True)
            text = f"{head}{CAPACITY_BEGIN}\n{table}\n{CAPACITY_END}{tail}"
            args.readme.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
