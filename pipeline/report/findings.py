"""The findings table: each seed's qualitative claim replicated at CPU size, the measured numbers (mean and
spread over replicates) and whether the claim holds here (config/findings.yaml -> results/tables/findings.table).

`python -m pipeline findings --spec config/findings.yaml --input KEY=PATH ... --out T.table --csv T.csv
--tex T.tex`: KEY is `experiment|checkpoint|source|dataset` (source: an evaluation, or `train` for a stage's
throughput, whose PATH is the stage's final.pt with metrics.jsonl beside it); the workflow's findings rule passes
exactly the inputs `inputs(spec, ...)` lists.
"""
from __future__ import annotations

import argparse
import csv
import io
import statistics
from dataclasses import dataclass
from pathlib import Path

from ..config.schema import read_yaml, validate
from ..config.view import Named
from ..errors import UserError
from ..utils.io import read_json, read_jsonl, write_text

TRAIN = "train"  # the source of a samples_per_s term


def load_spec(path: str | Path) -> Named:
    from ..config.schema import load_schema

    data = validate(read_yaml(path), "findings", str(path))
    return Named(Path(path).stem, data, load_schema("findings"))


@dataclass(frozen=True)
class Need:
    """One input file of one term and replicate."""
    key: str
    experiment: str    # with @k for replicate k
    checkpoint: str
    source: str        # an evaluation name, or TRAIN
    dataset: str


def replicate_name(experiment: str, k: int) -> str:
    return experiment if k == 0 else f"{experiment}@{k}"


def term_source(term) -> tuple[str, str | None]:
    """(source, metric): samples_per_s -> (train, None); 'zeroshot.acc1' -> ('zeroshot', 'acc1')."""
    if term.measure == "samples_per_s":
        return TRAIN, None
    evaluation, metric = term.measure.split(".", 1)
    return evaluation, metric


def needs(spec) -> list[Need]:
    """Every file the table reads: per claim term and replicate."""
    out: dict[str, Need] = {}
    for claim in spec.claims:
        for term in claim.terms:
            source, _ = term_source(term)
            dataset = term.dataset or spec.dataset
            for k in range(spec.replicates):
                name = replicate_name(term.experiment, k)
                key = "|".join((name, term.checkpoint, source, dataset))
                out[key] = Need(key, name, term.checkpoint, source, dataset)
    return list(out.values())


def _value(term, path: Path) -> float:
    source, metric = term_source(term)
    if source == TRAIN:
        records = read_jsonl(path.parent / "metrics.jsonl")
        rates = [r["samples_per_s"] for r in records[1:] or records]  # the first record includes the start-up
        if not rates:
            raise UserError(f"{path.parent / 'metrics.jsonl'}: no training records to measure throughput on")
        return statistics.median(rates)
    record = read_json(path, "result file")
    value = record.get("metrics", {}).get(metric)
    if not isinstance(value, (int, float)):
        raise UserError(f"{path}: metrics.{metric}: missing or not a number (needed by findings term {term.label!r})")
    return 100.0 * value


@dataclass
class Measured:
    label: str
    values: list[float]
    unit: str

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def spread(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def text(self) -> str:
        digits = 0 if self.unit == "samples/s" else 1
        spread = f" ± {self.spread:.{digits}f}" if len(self.values) > 1 else ""
        return f"{self.label}: {self.mean:.{digits}f}{spread} {self.unit} (n={len(self.values)})"


def verdict(claim, measured: list[Measured]) -> tuple[bool, str]:
    means = [m.mean for m in measured]
    if claim.kind == "order":
        return all(a >= b for a, b in zip(means, means[1:])), " ≥ ".join(m.label for m in measured)
    if claim.kind == "ratio":
        ratio = means[0] / means[1]
        return ratio >= claim.threshold, f"ratio {ratio:.2f}x (holds from {claim.threshold:g}x)"
    if claim.kind == "within":
        gap = means[1] - means[0]
        side = f"{gap:.1f} points below" if gap > 0 else f"{-gap:.1f} points above"
        return gap <= claim.gap, f"{measured[0].label} is {side} {measured[1].label} (holds up to {claim.gap:g} below)"
    return means[0] <= claim.threshold, f"at most {claim.threshold:g} holds"


def build_rows(spec, files: dict[str, Path]) -> list[dict]:
    rows = []
    for claim in spec.claims:
        measured = []
        for term in claim.terms:
            source, _ = term_source(term)
            dataset = term.dataset or spec.dataset
            keys = ["|".join((replicate_name(term.experiment, k), term.checkpoint, source, dataset))
                    for k in range(spec.replicates)]
            missing = [k for k in keys if k not in files]
            if missing:
                raise UserError(f"findings: no --input for {missing[0]} (claim {claim.id})")
            unit = "samples/s" if source == TRAIN else "%"
            measured.append(Measured(term.label, [_value(term, files[k]) for k in keys], unit))
        holds, how = verdict(claim, measured)
        rows.append({"paper": claim.paper, "claim": claim.id, "statement": " ".join(claim.statement.split()),
                     "measured": "; ".join(m.text() for m in measured), "test": how,
                     "verdict": "holds" if holds else "does not hold", "note": " ".join(claim.note.split()),
                     "terms": measured})
    return rows


def to_markdown(spec, rows: list[dict]) -> str:
    lines = ["# findings", ""]
    if spec.description:
        lines += [" ".join(spec.description.split()), ""]
    lines += [f"Each term: mean ± standard deviation over {spec.replicates} replicates (seeds); accuracies in percent "
              f"on {spec.dataset} (held out; no selection on it).", "",
              "| seed | claim | measured | test | verdict | note |", "|---|---|---|---|---|---|"]
    for r in rows:
        cells = [r["paper"], f"**{r['claim']}**: {r['statement']}", r["measured"], r["test"], r["verdict"], r["note"]]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["paper", "claim", "term", "mean", "std", "n", "unit", "verdict"])
    for r in rows:
        for m in r["terms"]:
            writer.writerow([r["paper"], r["claim"], m.label, f"{m.mean:.4f}", f"{m.spread:.4f}", len(m.values),
                             m.unit, r["verdict"]])
    return buf.getvalue()


def to_latex(rows: list[dict]) -> str:
    from .render import tex_escape

    lines = [r"\begin{tabular}{lllll}", r"\toprule", r"seed & claim & measured & test & verdict \\", r"\midrule"]
    for r in rows:
        cells = [r["paper"], r["claim"], r["measured"], r["test"], r["verdict"]]
        lines.append(" & ".join(tex_escape(c).replace("±", r"$\pm$") for c in cells) + r" \\")
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline findings", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spec", required=True, help="config/findings.yaml")
    p.add_argument("--input", action="append", metavar="KEY=PATH", help="one file of one term and replicate")
    p.add_argument("--out", required=True, help="markdown table")
    p.add_argument("--csv", required=True, help="long-form CSV")
    p.add_argument("--tex", required=True, help="LaTeX tabular")
    args = p.parse_args(argv[1:])
    files = {}
    for item in args.input or ():
        key, sep, path = item.partition("=")
        if not sep:
            raise UserError(f"--input: expected KEY=PATH, got {item!r}")
        files[key] = Path(path)
    spec = load_spec(args.spec)
    rows = build_rows(spec, files)
    write_text(args.out, to_markdown(spec, rows))
    write_text(args.csv, to_csv(rows))
    write_text(args.tex, to_latex(rows))
    for r in rows:
        print(f"{r['claim']}: {r['verdict']} ({r['test']})")
    return 0
