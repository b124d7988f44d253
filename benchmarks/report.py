"""Rebuild the paper's tables and figures from the result CSVs, beside the paper's numbers, and the README section.

    python -m benchmarks.report [--results DIR] [--paper FILE] [--readme FILE]

Reads only records (``benchmarks.records``), with pandas: ``paper.csv`` (the paper's numbers), the run CSVs
written by ``benchmarks.run`` (``300w.csv`` → Table 2, ``300vw.csv`` → Table 3, ``ears.csv`` → Table 4, rows of
the ``test`` split), their per-image error files under ``errors/`` (each checked to hold its row's ``n``
errors: a cut, header-only or missing file is reported with its name and gets no curve, and the exit status is
1), and when present ``helen.csv`` (Table 1), ``fig5_runs.csv`` (Fig. 5) and ``fig9_runs.csv`` (Fig. 9), whose columns
``results/README.md`` documents. Writes, atomically, into the results folder:

* ``table1.csv`` … ``table4.csv``, ``fig5.csv``: long format, one line per number: ``table, row, metric,
  paper, tolerance, ours, std, n_seeds, seeds, superseded, diff, unit, source, preset, n, init, fitter, tag,
  commit, date``. ``ours`` is empty where we
  have not produced the number yet, ``paper`` where the paper has none (our extra rows and the 0.08 columns);
  ``diff = ours − paper``. Failure rates and IoUs are in percent, like the paper; AUCs are fractions.
* ``table1.md`` … ``fig5.md``: the same in the paper's layout (tabulate), one table per data source and
  preset, each titled with both. Runs of one method that differ only by seed are averaged; runs that used
  different artefact variants (a K=5 and a K=10 checkpoint) are separate rows labelled with the variants.
  Every number of ours is the mean ± standard deviation over the seeds present (``benchmarks.seeds``: the
  latest row per method and seed; older rows of one method and seed are left out, and the tables say so);
  Table 2's paper numbers carry a tolerance column (``benchmarks.tables.tolerance``);
* ``verdicts.md``: each claim of the paper with its verdict computed from those tables (``benchmarks.verdicts``:
  holds / does not hold / not measured, and whether the margin exceeds the seed spread);
* ``figures/fig7_300w_<source>.png``: Fig. 7, top panel DenseReg and DenseReg+MDM beside the published 300-W
  challenge CEDs (``results/reference/``; on synthetic data drawn as the paper's reference, not comparable),
  bottom panel the CED of every initialiser × fitter run on the 300-W test set;
* ``figures/fig12_ears_<source>.png``: Fig. 12, the CED of every Table 4 row on the ear test set;
* ``figures/fig5_<source>.png``: AUC against K for the ``q`` and ``q+r`` decodings, ours against the paper's;
* ``table3_categories.md`` and ``figures/table3_ced_<source>-<preset>.png``: Table 3's rows per 300-VW
  category, and their CEDs (``benchmarks.experiments.tracking_report``);
* ``speed.md``: the speed table (``benchmarks.experiments.speed_table``) of ``speed.csv``, when present, also
  shown at the end of the README section;
* the README section between ``<!-- results:start -->`` and ``<!-- results:end -->`` (appended when the
  markers are absent): every table that holds at least one of our numbers, and the figures.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from benchmarks import records as provenance, run_tables, verdicts
from benchmarks.experiments import speed_table, tracking_report
from benchmarks.figures import FIG7_CAPTION, fig5_plot, fig7, fig12
from benchmarks.tables import LANDMARK_TABLES, LONG_COLUMNS, compare, fig5_ours, fig9_ours, helen_ours, \
    landmark_ours, markdown, read_paper

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = Path("results")                       # outputs: the current folder, not the install location
DEFAULT_PAPER = REPO_ROOT / "results" / "paper.csv"     # an input that ships with the code
DEFAULT_README = Path("README.md")
MARK_START, MARK_END = "<!-- results:start -->", "<!-- results:end -->"
# README section


def replace_section(text, section):
    """``text`` with the part between the results markers replaced by ``section`` (markers appended if absent).

    Raises:
        ValueError: only one marker, or the end marker before the start marker.
    """
    block = f"{MARK_START}\n{section.strip()}\n{MARK_END}"
    start, end = text.find(MARK_START), text.find(MARK_END)
    if start == -1 and end == -1:
        return text.rstrip("\n") + "\n\n" + block + "\n"
    if start == -1 or end == -1 or end < start:
        raise ValueError(f"README markers malformed: need {MARK_START} before {MARK_END}")
    return text[:start] + block + text[end + len(MARK_END):]


def readme_section(tables, figures, readme, verdict_text=""):
    """Markdown of the generated results section: the tables holding our numbers, the claims' verdicts and
    the figures (Fig. 7 with its caption)."""
    out = ["## Results (generated)", "",
           "Written by `python -m benchmarks.report` from the CSV files in `results/`; do not edit by hand. "
           "Every title says which data source and preset produced the numbers; synthetic numbers are not the "
           "paper's and are not comparable with them. Failure rates and IoUs in %; Δ = ours − paper.", ""]
    empty = []
    for name, lines in tables.items():
        if any(l["ours"] for l in lines):
            out.append(markdown(name, [l for l in lines if l["source"]], level=3))
        else:
            empty.append(name)
    if empty:
        out.append(f"Not produced yet: {', '.join(empty)} (their `.md` files in `results/` list the paper's values).\n")
    if verdict_text:
        out.append(verdict_text.replace("\n## ", "\n### ").replace("## ", "### ", 1))
    for path in figures:
        rel = os.path.relpath(path, Path(readme).resolve().parent)
        out.append(f"![{Path(path).stem}]({Path(rel).as_posix()})\n")
        if Path(path).stem.startswith("fig7_"):
            out.append(f"*{FIG7_CAPTION}*\n")
    return "\n".join(out)


def build_report(results_dir, paper_path, readme, problems=None):
    """Write every table, figure and the README section; returns ``{table: lines}`` and the figure paths.

    Problems with per-image errors files are appended to ``problems`` (each names its file).
    """
    results_dir = Path(results_dir).resolve()
    paper = read_paper(paper_path)
    ours = {name: landmark_ours(results_dir, spec) for name, spec in LANDMARK_TABLES.items()}
    ours["table1"] = helen_ours(results_dir)
    ours["fig5"] = fig5_ours(results_dir)
    ours["fig9"] = fig9_ours(results_dir)
    tables = {}
    for name in ("table1", "table2", "table3", "table4", "fig5", "fig9"):
        lines = compare(name, paper.get(name, {}), ours[name])
        tables[name] = lines
        provenance.write_csv(results_dir / f"{name}.csv", lines, LONG_COLUMNS)
        provenance.atomic_write_text(results_dir / f"{name}.md", markdown(name, lines))
    judged = verdicts.evaluate(tables)
    provenance.atomic_write_text(results_dir / "verdicts.md",
                                 "# The paper's claims: verdicts\n\n" + verdicts.markdown(judged))
    verdict_text = verdicts.markdown(judged, full=False) + "Every comparison: `results/verdicts.md`.\n"
    figures_dir = results_dir / "figures"
    figures = fig7(results_dir, figures_dir, problems) + fig12(results_dir, figures_dir, problems) \
        + fig5_plot(tables["fig5"], figures_dir)
    # Table 3 per 300-VW category and its CEDs (benchmarks.experiments.tracking_report).
    tracking_report.write_category_table(results_dir)
    figures += tracking_report.ced_figure(results_dir, figures_dir, problems)
    # Figures other commands draw (Fig. 6 by benchmarks.experiments.segmentation, Fig. 8 by
    # benchmarks.experiments.fig8, Fig. 9 by benchmarks.experiments.depth, Fig. 11 by benchmarks.experiments.ear_pairs)
    # are linked when present.
    figures += sorted(figures_dir.glob("fig6_*.png")) + sorted(figures_dir.glob("fig8_*.png")) \
        + sorted(figures_dir.glob("fig9_*.png")) + sorted(figures_dir.glob("fig10_*.png")) \
        + sorted(figures_dir.glob("fig11_*.png"))
    speed = speed_table.markdown(results_dir / "speed.csv")      # the speed figures (issue 16), when measured
    if speed:
        provenance.atomic_write_text(results_dir / "speed.md", speed)
    extra = ""   # our numbers with no paper table beside them: the body (Fig. 10) and sim2real
    for name in run_tables.RUN_TABLES:
        text = run_tables.markdown(results_dir, name)
        if text:
            provenance.atomic_write_text(results_dir / f"{name}.md", text)
            extra += "\n" + text
    if readme is not None:
        readme = Path(readme)
        text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
        section = readme_section(tables, figures, readme, verdict_text) + extra + ("\n" + speed if speed else "")
        provenance.atomic_write_text(readme, replace_section(text, section))
    return tables, figures


def main(argv=None):
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results folder (default results/)")
    parser.add_argument("--paper", type=Path, default=DEFAULT_PAPER, help="the paper's numbers (results/paper.csv)")
    parser.add_argument("--readme", type=Path, default=DEFAULT_README,
                        help="README whose generated results section is rewritten (default README.md)")
    parser.add_argument("--no-readme", action="store_true", help="leave the README alone")
    args = parser.parse_args(argv)
    problems = []
    readme = None if args.no_readme or (args.readme == DEFAULT_README and not args.readme.is_file()) else args.readme
    tables, figures = build_report(args.results, args.paper, readme, problems)
    for name, lines in tables.items():
        n_ours = sum(1 for l in lines if l["ours"])
        print(f"{args.results / name}.csv: {len(lines)} numbers, {n_ours} of ours")
    print(f"{args.results / 'verdicts.md'}: the paper's claims with their verdicts")
    for path in figures:
        print(f"figure: {path}")
    for problem in problems:
        print(f"benchmarks.report: error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
