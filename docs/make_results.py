"""Regenerate docs/results.md from the run records in docs/results/: ``python docs/make_results.py``.

Each record (JSON, one run of an example, written by its ``--record PATH``; format in
``examples/results_record.py``) becomes rows of one table; the page shows the current figures
only.  ``--check`` exits 1 when docs/results.md differs from what the records give.
"""
from __future__ import annotations

import argparse
import json
import sys
from statistics import mean
from pathlib import Path
from typing import Callable, Dict, List, Optional

DOCS = Path(__file__).resolve().parent
RECORDS = DOCS / "results"
PAGE = DOCS / "results.md"
CITATION = "Faria, G. R. A. (2021). Differentiable Causal Discovery Under Latent Interventions. Instituto Superior Técnico, Lisboa."
VARIANTS = ("latent", "unknown", "known", "observational", "semi")
MECHANISMS = ("linear", "mlp", "nonadditive")


def load(folder: Path = RECORDS) -> List[dict]:
    """Every record in ``folder``, in file-name order."""
    return [json.loads(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.json"))]


def number(value: Optional[float], spec: str) -> str:
    """``value`` formatted with ``spec``; an em dash where the run did not report it."""
    return "—" if value is None else format(value, spec)


def short_setting(setting: str) -> str:
    """The setting without the parts every Table 1 row shares (d = 10, n = 10000, stochastic)."""
    return setting.replace("stochastic, ", "").replace("d = 10, ", "").replace(", n = 10000", "")


def is_default(record: dict) -> bool:
    return record.get("options", "defaults").startswith(("defaults", "fit defaults"))


def table1_key(entry) -> tuple:
    record, row = entry
    mechanism = record["setting"].split(",")[0]
    variant = row["variant"].split(" ")[0].replace("semi-supervised", "semi")
    return (MECHANISMS.index(mechanism) if mechanism in MECHANISMS else len(MECHANISMS),
            "stochastic" not in record["setting"], record["setting"],  # the paper's interventions first
            not is_default(record), "" if is_default(record) else record["options"],
            VARIANTS.index(variant) if variant in VARIANTS else len(VARIANTS))


class Runs:
    """The numbered list of runs under a table: command, seeds, commit, machine, note."""

    def __init__(self) -> None:
        self.records: List[dict] = []

    def ref(self, record: dict) -> str:
        if not any(r is record for r in self.records):
            self.records.append(record)
        return f"[{next(i for i, r in enumerate(self.records, 1) if r is record)}]"

    def lines(self) -> List[str]:
        out = ["", "Runs:", ""]
        for i, r in enumerate(self.records, 1):
            note = f" {r['note'][0].upper()}{r['note'][1:]}." if r.get("note") else ""
            out.append(f"{i}. `{r['command']}`: {r['seeds']}; commit {r['commit']} ({r['date']}); {r['machine']}.{note}")
        return out


def table1(records: List[dict]) -> List[str]:
    runs = Runs()
    lines = ["## Table 1: simulated graphs", "",
             "Hamming distance to the true DAG (a reversed edge counts 2), mean ± sd over 5 Erdős–Rényi graphs; "
             "10 variables, 10,000 rows, one stochastic intervention per variable and the observational regime, "
             "unless the data column says otherwise. ARI: adjusted Rand index of argmax q(z) against the true "
             "regimes, in brackets the Bayes classifier's (it knows the SCM), the ceiling of any method's.", "",
             "| data | variant | options | Hamming | per graph | SHD | F1 | ARI (ceiling) | s / fit | paper | run |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    entries = sorted(((r, row) for r in records if r["experiment"] == "table1" for row in r["rows"]), key=table1_key)
    for record, row in entries:
        hamming = number(row["mean"], ".1f") + (f" ± {row['sd']:.1f}" if row.get("sd") is not None else "")
        ceiling = record.get("ari_ceiling")
        ari = number(row.get("ari"), ".2f") + (f" ({ceiling:.2f})" if ceiling is not None and row.get("ari") is not None else "")
        lines.append(f"| {short_setting(record['setting'])} | {row['variant']} | {record.get('options', 'defaults')} | "
                     f"{hamming} | {' '.join(map(str, row['hamming']))} | {number(row.get('shd'), '.1f')} | "
                     f"{number(row.get('f1'), '.2f')} | {ari} | {number(row.get('seconds'), '.0f')} | "
                     f"{row.get('paper') or '—'} | {runs.ref(record)} |")
    return lines + runs.lines()


def order_search(records: List[dict]) -> List[str]:
    runs = Runs()
    lines = ["## Dense graphs and the order search", "",
             "Four edges per node; the penalty loop (fit's default search) followed by `order_refit` rounds "
             "(`--order-refit`; 3 by default for the linear density since ed2bd20, for every density since 1fd4ab0), runs of the imperfect model at "
             "full batch. Table 1 has the e = 4 rows of the current defaults. Bound: the ELBO per row of the fit found; truth held: the same with the graph held at "
             "the true DAG.", "",
             "| data | variant | order refit | Hamming per graph | edges found (true) | bound / row | truth held | run |",
             "|---|---|---|---|---|---|---|---|"]
    for record in (r for r in records if r["experiment"] == "order_search"):
        for row in record["rows"]:
            bound = ", ".join(f"{b:.3f}" for b in row["bound"]) if row.get("bound") else "—"
            truth = ", ".join(f"{b:.3f}" for b in row["truth_held"]) if row.get("truth_held") else "—"
            lines.append(f"| {short_setting(record['setting'])} | {row['variant']} | {row['order_refit']} | "
                         f"{' '.join(map(str, row['hamming']))} | {row.get('edges') or '—'} | {bound} | {truth} | "
                         f"{runs.ref(record)} |")
    return lines + runs.lines()


def table2(records: List[dict]) -> List[str]:
    runs = Runs()
    chosen = [r for r in records if r["experiment"] == "table2"]
    references = sorted({r["ari_reference"] for r in chosen if r.get("ari_reference") is not None})
    lines = ["## Table 2: Sachs flow cytometry", "",
             "7,466 cells, 11 proteins, 9 conditions; scored against the 18-edge consensus network. "
             "F1 (Table 2) leaves reversed edges out of both counts, as the paper's column does; F1 (directed) "
             "counts a reversal as a miss and a false discovery. ARI against the 9 conditions; a Gaussian "
             "classifier given the conditions reaches " + " / ".join(f"{v:.2f}" for v in references) + ". "
             "Paper: the SHD and F1 of the paper's row for the same density.", "",
             "| density | variant | options | SHD | tp | fn | fp | rev | F1 (Table 2) | F1 (directed) | ARI | edges | s | paper SHD / F1 | run |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    densities = ("linear", "mlp", "flow")
    order = lambda r: (VARIANTS.index(r["rows"][0]["variant"]), densities.index(r["rows"][0]["density"]),
                       not is_default(r))  # noqa: E731
    for record in sorted(chosen, key=order):
        for row in record["rows"]:
            paper = f"{row['paper']['shd']} / {row['paper']['f1']:.2f}" if row.get("paper") else "—"
            lines.append(f"| {row['density']} | {row['variant']} | {record.get('options', 'fit defaults')} | {row['shd']} | "
                         f"{row['tp']} | {row['fn']} | {row['fp']} | {row['reversed']} | {row['f1_table2']:.2f} | "
                         f"{row['f1']:.2f} | {row['ari']:.2f} | {row['edges']} | {number(row.get('seconds'), '.0f')} | "
                         f"{paper} | {runs.ref(record)} |")
    sys.path.insert(0, str(DOCS.parent / "examples"))
    from sachs import PAPER_TABLE2  # the paper's rows, as the example prints them

    baselines = [row for row in PAPER_TABLE2 if "(paper)" not in row[0]]
    lines += ["", "The paper's baselines (SHD / F1): " + ", ".join(f"{r[0]} {r[1]} / {r[6]:.2f}" for r in baselines) + "."]
    return lines + runs.lines()


def pairs_right(row: dict, key: str) -> str:
    """``right/pairs`` of ``row[key]`` (right before the edge search, right at the true regimes), where the run recorded it."""
    right = row.get(key)
    return "—" if right is None else f"{right}/{row['pairs']}"


def figure3(records: List[dict]) -> List[str]:
    runs = Runs()
    graphs = ("A -> B", "B -> A", "no edge")
    lines = ["## Figure 3: cause-effect pairs", "",
             "Two-variable linear Gaussian SCMs (A -> B, B -> A or no edge, a third each), 333 observational rows "
             "and 333 under an intervention on each variable; Hamming distance 0 is right, 1 an edge missing or "
             "extra, 2 reversed. Right at the true regimes: the pairs whose true graph the fit's own model ranks first "
             "when every row sits in its true regime (mechanisms at their maximum likelihood, each graph with its best "
             "targets, priors included; `profile_ranking` in `examples/cause_effect.py`): what the bound can tell apart "
             "once the mixture is found. The paper gives no numbers, only its Figure 3 (60 pairs).", "",
             "| variant | options | HD 0 | HD 1 | HD 2 | exactly right | " + " | ".join(f"right when {g}" for g in graphs)
             + " | right before the edge search | right at the true regimes | s / fit | run |", "|---" * 13 + "|"]
    for record in sorted((r for r in records if r["experiment"] == "figure3"), key=lambda r: not is_default(r)):
        for row in record["rows"]:
            hd = " | ".join(number(v, "d") for v in row["hd"])
            by_graph = " | ".join("{}/{}".format(*row["right_by_graph"][g]) for g in graphs)
            lines.append(f"| {row['variant']} | {record.get('options', 'defaults')} | {hd} | "
                         f"{row['hd'][0] / row['pairs']:.0%} ({row['hd'][0]}/{row['pairs']}) | {by_graph} | "
                         f"{pairs_right(row, 'right_before_search')} | {pairs_right(row, 'right_at_true_regimes')} | "
                         f"{number(row.get('seconds'), '.1f')} | {runs.ref(record)} |")
    ranked = [r for r in records if r["experiment"] == "figure3_ranking"]
    if ranked:
        lines += ["", "Right at the true regimes, for each intervention model (no fit):", "",
                  "| model | simulated interventions | right at the true regimes | "
                  + " | ".join(f"right when {g}" for g in graphs) + " | run |", "|---" * 7 + "|"]
        for record in sorted(ranked, key=lambda r: (r["rows"][0]["model"], r["rows"][0].get("data", "stochastic") != "stochastic")):
            row = record["rows"][0]
            lines.append(f"| {row['model']} | {row.get('data', 'stochastic')} | "
                         f"{row['right'] / row['pairs']:.0%} ({row['right']}/{row['pairs']}) | "
                         + " | ".join("{}/{}".format(*row["right_by_graph"][g]) for g in graphs)
                         + f" | {runs.ref(record)} |")
    return lines + runs.lines()


def sweep(records: List[dict]) -> List[str]:
    """One row per cell of ``examples/table1.py --sweep``: the latest run of each cell (of a day's runs, fit's defaults)."""
    runs = Runs()
    lines = ["## Beyond the paper's generator: the sweep of Table 1", "",
             "`examples/table1.py --sweep`: the paper's cell, then one factor of the generator changed at a time. "
             "Hamming distance (a reversed edge counts 2), mean over 5 graphs, per graph in brackets; the empty "
             "graph's is the number of true edges. Latent < observational: whether the latent fit's mean beats the "
             "observational baseline's (`--observational`, K = 1). ARI: adjusted Rand index of argmax q(z), in "
             "brackets the Bayes classifier's (it knows the SCM and the regimes). Cells not listed here (the paper's "
             "e = 1, e = 2, e = 4, imperfect interventions) were run one variant at a time: Table 1 above.", "",
             "| cell | d | e | weights | noise sd | int. mean | interventions | latent | observational | empty "
             "| latent < obs. | ARI (ceiling) | paper latent / obs. | run |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    latest: Dict[str, tuple] = {}
    for record in sorted((r for r in records if r["experiment"] == "sweep"), key=lambda r: (r["date"], is_default(r))):
        for row in record["rows"]:
            latest[row["cell"]] = (record, row)
    if not latest:
        return []
    for record, row in latest.values():
        latent, observational = row["latent"], row["observational"]
        better = "yes" if mean(latent) < mean(observational) else "**no**"
        lines.append(
            f"| {row['cell']} | {row['d']} | {row['e']:g} | {row['weights'][0]:g}-{row['weights'][1]:g} "
            f"| {row['noise_sd'][0]:g}-{row['noise_sd'][1]:g} | {row['intervention_mean']:g} | {row['interventions']} "
            f"| {mean(latent):.1f} ({' '.join(map(str, latent))}) | {mean(observational):.1f} "
            f"({' '.join(map(str, observational))}) | {mean(row['empty']):.1f} | {better} "
            f"| {row['ari']:.2f} ({row['ari_ceiling']:.2f}) | {row.get('paper') or '—'} | {runs.ref(record)} |")
    return lines + runs.lines()


SECTIONS: Dict[str, Callable[[List[dict]], List[str]]] = {
    "table1": table1, "sweep": sweep, "order_search": order_search, "table2": table2, "figure3": figure3}


def render(records: List[dict]) -> str:
    """The whole page."""
    unknown = {r["experiment"] for r in records} - set(SECTIONS) - {"figure3_ranking"}  # figure3 shows the rankings
    if unknown:
        raise ValueError(f"records of unknown experiments: {sorted(unknown)}")
    lines = ["# Results", "",
             "The paper's experiments, ours beside the paper's: the current figure of each, with the "
             "command, seeds and commit that produced it (the commit that reported the run). Generated by "
             "`python docs/make_results.py` from the records in `docs/results/`, which the examples write with "
             "`--record PATH`; do not edit this page by hand. How the figures came about: "
             "`docs/history/results.md` and `CHANGELOG.md`. A run repeats bit for bit only on the CPU "
             "kernels it ran on; records that name no CPU predate that field (Table 1's latent e = 1 record repeats "
             "to the last digit with `ATEN_CPU_CAPABILITY=avx2` on an AVX512 machine; `docs/reliability.md`, "
             "\"Seeds\").", "", f"Paper: {CITATION}", ""]
    for section in SECTIONS.values():
        part = section(records)
        lines += part + [""] if part else []
    return "\n".join(lines[:-1]) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/results.md is not what the records give")
    args = parser.parse_args(argv)
    text = render(load())
    if args.check:
        if PAGE.read_text(encoding="utf-8") != text:
            print("docs/results.md differs from the records in docs/results/: run python docs/make_results.py",
                  file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
