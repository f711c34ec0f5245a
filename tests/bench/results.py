"""One benchmark table: every benchmark records its figures here; `python -m tests.bench.results`
prints the table (figure, value, target, ratio to target, machine) and writes it to
BENCHMARKS.md, and between the markers of the README's benchmark section.

A ratio >= 1.00 meets the target, whichever way the figure is better (higher throughput, lower
time or memory)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS = Path(os.environ.get("MEDBENCH_BENCH_RESULTS", ".tmp/bench/results.jsonl"))
BEGIN, END = "<!-- benchmark-table:begin -->", "<!-- benchmark-table:end -->"


@dataclass(frozen=True)
class Result:
    bench: str
    figure: str
    value: float
    unit: str
    target: float | None
    higher_is_better: bool
    machine: str
    at: float

    @property
    def ratio(self) -> float | None:
        if self.target is None or self.value == 0 or self.target == 0:
            return None
        return self.value / self.target if self.higher_is_better else self.target / self.value


def machine() -> str:
    cores = os.cpu_count() or 0
    memory = ""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            kib = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
        memory = f", {kib / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{cores} cores{memory}, Python {platform.python_version()}"


def record(
    bench: str,
    figure: str,
    value: float,
    unit: str,
    target: float | None = None,
    higher_is_better: bool = True,
) -> None:
    """Appends one figure to the results file (the latest value of a figure wins)."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    result = Result(bench, figure, value, unit, target, higher_is_better, machine(), time.time())
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(json.dumps(asdict(result), ensure_ascii=False) + "\n")


def latest(path: Path = RESULTS) -> list[Result]:
    found: dict[tuple[str, str], Result] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = Result(**json.loads(line))
                found[(r.bench, r.figure)] = r
    return sorted(found.values(), key=lambda r: r.at)


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


# Benchmarks whose many rows are inputs of another tool, not figures to read: BENCHMARKS.md has
# them all, the README's table names how many it leaves out.
README_OMITS = {
    "costs": "per-1,000-item costs of tests/bench/bench_costs.py, the capacity model's inputs"
}


def table(results: list[Result], omit: dict[str, str] | None = None) -> str:
    omitted = [r for r in results if r.bench in (omit or {})]
    results = [r for r in results if r.bench not in (omit or {})]
    lines = [
        "| benchmark | figure | value | target | ratio |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        sign = ">=" if r.higher_is_better else "<="
        target = f"{sign} {_number(r.target)} {r.unit}" if r.target is not None else "-"
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        lines.append(
            f"| {r.bench} | {r.figure} | {_number(r.value)} {r.unit} | {target} | {ratio} |"
        )
    for bench, what in (omit or {}).items():
        count = sum(r.bench == bench for r in omitted)
        if count:
            lines.append(f"| {bench} | {count} rows in BENCHMARKS.md: {what} | - | - | - |")
    machines = sorted({r.machine for r in results})
    when = time.strftime("%Y-%m-%d", time.gmtime(max((r.at for r in results), default=0)))
    lines.append("")
    lines.append(f"Machine: {'; '.join(machines) or '-'}. Measured {when} (UTC).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--readme", type=Path, help="replace the table between the markers")
    args = parser.parse_args(argv)
    results = latest()
    if not results:
        print(f"no results in {RESULTS}: run `make bench`")
        return 1
    text = table(results)
    print(text)
    args.write.write_text(f"# Benchmarks\n\nWritten by `make bench`.\n\n{text}\n", "utf-8")
    if args.readme is not None:
        readme = args.readme.read_text(encoding="utf-8")
        if BEGIN in readme and END in readme:
            head, rest = readme.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            short = table(results, README_OMITS)
            args.readme.write_text(f"{head}{BEGIN}\n{short}\n{END}{tail}", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
