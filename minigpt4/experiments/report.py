"""The report of a reproduction, next to its `runs/`: `report.md` (ours next to the paper's numbers, table by
table; for a dataset the paper has no numbers for, the rows next to each other with their spread over redraws of
the test users), `results.csv` (every scored split of every finished step), `environment.json` (the machine and
code the runs came from) and the figures (figures.py)."""

import csv
import io
import json
import math
import os
import platform
from pathlib import Path

from omegaconf import OmegaConf

from minigpt4 import stages
from minigpt4.config import EMBEDDED_LLM
from minigpt4.experiments import records
from minigpt4.experiments.definitions import (
    COMPARISONS,
    DATASETS,
    PAPER,
    STEP_LABEL,
    STEPS,
    TABLES,
    has_paper,
    label,
    paper_value,
    seeded,
    split_seed,
    takes_seed,
)
from minigpt4.experiments.figures import write_figures
from minigpt4.experiments.spread import compare, load_test_predictions, same_rows, sample_spread
from minigpt4.fileio import atomic_text
from minigpt4.metrics import redraw_spread
from minigpt4.train.run_dir import environment


def collect(runs, steps, stale=()):
    """{step: metrics dict} of every finished run that is not stale (its numbers no longer describe the plan)."""
    out = {}
    for s in steps:
        f = runs / s / "metrics.json"
        if s in stale:
            continue
        if f.is_file():
            out[s] = json.loads(f.read_text(encoding="utf-8"))
    return out


def _fmt(x, signed=False):
    if x is None:
        return "–"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _diff(a, b):
    return None if a is None or b is None else a - b


def _code(commit, dirty):
    return f"`{commit[:10]}`" + (" plus uncommitted changes" if dirty else ", clean tree")


def provenance(env, runs_code=None):
    """One line on the code a report came from: environment.json's commit and whether the tree was clean, then,
    when known, the code of each run (`runs_code`: run_commits())."""
    if not env or not env.get("git_commit"):
        head = "Code: unknown (no git commit recorded)."
    elif runs_code:
        head = f"Report written at commit {_code(env['git_commit'], env.get('git_dirty'))}."
    elif env.get("git_dirty"):
        return (f"**Code: commit `{env['git_commit'][:10]}` plus uncommitted changes** (environment.json: git_dirty "
                "true), so no commit reproduces these runs exactly.")
    else:
        return f"Code: commit `{env['git_commit'][:10]}`, clean tree."
    if not runs_code:
        return head
    parts = [f"{_code(commit, dirty) if commit else 'unknown'}: {', '.join(steps)}"
             for (commit, dirty), steps in runs_code.items()]
    dirty = any(d or not c for c, d in runs_code)
    return (f"{head} Code of the runs (`runs/<step>/environment.json`, with the commit of each resumption): "
            + "; ".join(parts) + "."
            + (" **A run from uncommitted changes (or an unknown commit) is not reproduced exactly by any commit.**"
               if dirty else ""))


def run_commits(runs, steps, recorded=None):
    """{(commit, dirty): [step, ...]}: the code each finished step's run came from, by its environment.json (or,
    for a step known from its record only, the record's); a run resumed on other code is also listed under that
    code as `<step> from step N` (once: a run stopped again before its next checkpoint resumes from the same one)."""
    out, recorded = {}, recorded or {}
    for step in steps:
        f = runs / step / "environment.json"
        if step in recorded:
            env = recorded[step].get("environment") or {}
        else:
            env = json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}
        out.setdefault((env.get("git_commit"), env.get("git_dirty")), []).append(step)
        for r in env.get("resumes", []):
            names, name = out.setdefault((r.get("git_commit"), r.get("git_dirty")), []), f"{step} from step {r['step']}"
            if name not in names:
                names.append(name)
    return out


def warm_cold_note(metrics, steps):
    """Which rows each step's test_warm / test_cold held (run.warm_rule / run.cold_rule, recorded in metrics.json)."""
    parts = []
    for step in dict.fromkeys(s for s in steps if s in metrics):
        r = metrics[step].get("warm_cold_rules")
        parts.append(f"{step} {r['warm_rule']} / {r['cold_rule']}" if r else f"{step} not recorded (run before "
                     "run.warm_rule existed: the dataset builder's rule / not_cold)")
    return ("Warm / cold rules (run.warm_rule / run.cold_rule): " + "; ".join(parts) + "." if parts
            else "Warm / cold rules: no finished step yet.")


def redraw_spreads(preds):
    """{step: (sd AUC, sd UAUC)} of every finished LLM row over 200 bootstrap redraws of the users its test rows
    hold (minigpt4.metrics.redraw_spread): how much the row would move had other users been scored. `preds`:
    load_test_predictions(). A row scored on one user is left out: redrawing one user cannot move it."""
    return {step: redraw_spread(frame["uid"].to_numpy(), frame["label"].to_numpy(), frame["score"].to_numpy())
            for step, frame in preds.items() if frame["uid"].nunique() > 1}


def _sd(pair):
    return f"±{pair[0]:.4f} / ±{pair[1]:.4f}" if pair else "–"


def precision_line(metrics):
    """Which dtype each LLM row computed in (metrics.json `precision`): rows of several machines may differ."""
    by = {}
    for step, m in metrics.items():
        if stages.get(STEPS[step].stage).llm:
            dtype = (m.get("precision") or {}).get("dtype", "not recorded")
            if records.rounded_scores(m):
                # scored before the score head was kept out of autocast: bf16 scores, many of them tied
                dtype = "bf16 with its scores rounded to bf16 (run before the fp32 score head)"
            by.setdefault(dtype, []).append(step)
    if not by:
        return []
    return ["Precision of the LLM rows (`precision` in each step's metrics; `run.dtype: auto` takes bf16 on a CPU "
            "or GPU that computes it natively): " + "; ".join(f"{d}: {', '.join(s)}" for d, s in by.items()) + ".",
            ""]


def report_markdown(dataset, budget, metrics, same=(), spread=(), stale=(), llama=None, env=None, redraw=None,
                    compared=(), runs_code=None, recorded=(), changed=(), seeds=None, others=None):
    """`redraw`: redraw_spreads(), shown in the tables of a dataset the paper has no numbers for (has_paper); the
    tables of the others put the paper's numbers next to ours instead. `compared`: spread.compare() of the
    report's pairs of steps (tables.yaml comparisons). `runs_code`: run_commits(). `recorded`: the steps known from
    their records only; `changed`: changed_inputs(). `seeds`: {run: metrics} of other seeds' runs (other_seeds),
    each as (metrics, seed, own seed); `others`: another backbone's rows (backbone_differences)."""
    paper_known, redraw = has_paper(dataset), redraw or {}
    lines = [f"# Reproduction of BinLLM (ACL 2024) on {dataset}, budget `{budget}`", "",
             f"Backbone of the LLM rows: `{llama or EMBEDDED_LLM}`. {provenance(env, runs_code)}", ""]
    if recorded:
        lines += [f"Steps known from their records only (`steps/<step>.json`, written where they ran; their run "
                  f"directories stayed on that machine): {', '.join(recorded)}. Their rows are compared with the "
                  "others on the same rows only where `differences.json` kept the pair from a machine that had both "
                  "runs, or where an encoder trained again here for its checkpoint scored as its record.", ""]
    if changed:
        lines += ["**Rows that read another encoder or adapter than the row shown for it:** " + "; ".join(changed)
                  + ". The same settings trained on another machine (or in another precision) give another "
                  "encoder or adapter; how far apart two such trainings land is the cross-machine spread that "
                  "docs/REPRODUCE.md reports.", ""]
    lines += precision_line(metrics)
    if paper_known:
        lines += ["Ours: `runs/<step>/metrics.json` (or the step's record, `steps/<step>.json`). Paper: BinLLM "
                  "Tables 2-3 and Figures 2-3 (docs/PAPER_RESULTS.md). Difference = ours − paper. `rows` = test "
                  "rows scored (a subsample when below the split's size). The budget's overrides are listed in "
                  "`minigpt4/experiments/budgets.yaml`; each run's resolved config is `runs/<step>/config.yaml`.", ""]
    else:
        lines += [f"Ours: `runs/<step>/metrics.json` (or the step's record, `steps/<step>.json`). The paper "
                  f"(BinLLM) has no numbers for {dataset}, so the rows are compared with each other, not with the "
                  "paper; the tables keep the layout of its Tables 2-3 and Figures 2-3. `rows` = test rows scored "
                  "(a subsample when below the split's size). The budget's overrides are listed in "
                  "`minigpt4/experiments/budgets.yaml`; each run's resolved config is `runs/<step>/config.yaml`.",
                  "",
                  "`sd AUC / UAUC`: the standard deviation of an LLM row's test AUC / UAUC over 200 bootstrap "
                  "redraws of the users its test rows hold (whole users, with replacement; "
                  "`minigpt4.metrics.redraw_spread` on `runs/<step>/predictions_test.csv`), that is how much the "
                  "row would move had other users been scored. A difference between two rows smaller than about "
                  "twice that spread is not a finding. It leaves out how far another training of the same step "
                  "would land (docs/RESULTS.md measures that for a few steps). It is measured for the LLM rows on "
                  "the whole test split they scored: the encoder (stage 0) rows, the warm / cold rows and a row "
                  "scored on one user only show –.", ""]
    if budget == "smoke":
        lines += ["**Smoke budget: a few training steps on tiny samples; it checks the pipeline, its numbers mean "
                  "nothing.**", ""]
    done = sum(step in metrics for step in STEPS)
    lines += [f"Steps finished: {done} of {len(STEPS)}"
              + (f" (the others show `not run`{' or `to run again`' if stale else ''}; the same command continues the "
                 "reproduction)." if done < len(STEPS)
                 else "."), ""]
    if budget != "smoke" and paper_known:
        target, ours = PAPER[DATASETS[dataset]["paper"]]["binllm"], metrics.get("binllm", {}).get("test")
        paper = f"{target[0]:.4f} / {target[1]:.4f} test AUC / UAUC"
        head = (f"Target of the cpu budget: BinLLM at or above the paper's {paper} (Vicuna-7B). " if budget == "cpu"
                else f"The paper's BinLLM (Vicuna-7B): {paper}. ")
        lines += [head
                  + (f"Ours: {ours['auc']:.4f} / {ours['uauc']:.4f}, that is {ours['auc'] - target[0]:+.4f} / "
                     f"{ours['uauc'] - target[1]:+.4f} from it, over {ours['rows']} test rows."
                     if ours else "BinLLM has not finished yet."), ""]
    for table in TABLES.values():
        lines += [f"## {table.title}", ""]
        if not paper_known:
            lines += _table_without_paper(table, metrics, stale, redraw)
            continue
        if table.note:
            lines += [table.note, ""]
        lines += ["| method | step | ours AUC | ours UAUC | paper AUC | paper UAUC | Δ AUC | Δ UAUC | rows |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += _table_rows(table, metrics, stale, _paper_cells(dataset))
    if same:
        lines += ["## The LLM rows on the same test rows", "",
                  f"Every finished LLM row on the same {same[0][3]} test rows: the subsample the subsampled rows "
                  "were scored on, with the predictions of the rows scored on the full split restricted to its "
                  "(user, item) pairs. Compare the rows of this table with each other, not with the tables above: "
                  "the subsample holds whole users, so its warm/cold mix differs from the full split's.", "",
                  "| method | step | AUC | UAUC | rows |", "|---|---|---|---|---|"]
        lines += [f"| {STEP_LABEL.get(step, step)} | {step} | {auc:.4f} | {uauc:.4f} | {n} |"
                  for step, auc, uauc, n in same]
        lines.append("")
        if spread:
            on_sample = {step: (auc, uauc) for step, auc, uauc, _ in same}
            lines += [f"How much the draw of the sample alone moves a row: the standard deviation of the full-test "
                      f"rows' AUC / UAUC over 50 redraws of a {same[0][3]}-row sample of whole test users, and how "
                      "far this sample puts them from their full-split values. A subsampled row's difference from "
                      f"{'the paper' if paper_known else 'another row'} means little within about twice that "
                      "spread.", "",
                      "| method | step | sd AUC | sd UAUC | this sample − full split, AUC | UAUC |",
                      "|---|---|---|---|---|---|"]
            for step, sd_auc, sd_uauc in spread:
                full, here = metrics[step]["test"], on_sample.get(step)
                shift = (f"{here[0] - full['auc']:+.4f} | {here[1] - full['uauc']:+.4f}" if here else "– | –")
                lines.append(f"| {STEP_LABEL.get(step, step)} | {step} | ±{sd_auc:.4f} | ±{sd_uauc:.4f} | {shift} |")
            lines.append("")
    if compared:
        lines += ["## Differences on the same rows", "",
                  "Each pair of the paper's claims whose two steps have finished, on the test rows both scored (an "
                  "encoder's predictions restricted to an LLM row's subsample): first minus second, and the "
                  "standard deviation of that difference over 200 redraws of those rows' users "
                  "(`minigpt4.metrics.redraw_difference`). A difference within about twice its sd is not a "
                  "finding. A pair is computed where both runs' predictions are, and kept in `differences.json` "
                  "while both rows keep their numbers.", "",
                  "| first | second | rows | Δ AUC | Δ UAUC | sd Δ AUC / UAUC |", "|---|---|---|---|---|---|"]
        lines += [f"| {label(a)} | {label(b)} | {n} | {d_auc:+.4f} | {d_uauc:+.4f} | "
                  f"±{sd_auc:.4f} / ±{sd_uauc:.4f} |" for a, b, n, d_auc, d_uauc, sd_auc, sd_uauc in compared]
        lines.append("")
    if seeds:
        lines += _seed_section(metrics, seeds, redraw)
    if others:
        lines += _backbone_section(llama, *others)
    return "\n".join(lines)


def _seed_section(metrics, seeds, redraw):
    """The runs of other seeds next to the step's own run: how far another training of the same recipe lands."""
    lines = ["## Other seeds", "",
             "The LLM steps that train, trained again with another seed (`reproduce.py --seed N`: run.seed N; the "
             "same test rows, drawn with the step's own sample seed, and the same encoders; a stage-2 run reads "
             "the stage-1 adapter of its own seed). `Δ own` is the run minus the step's own run: how far another "
             "training of the same recipe lands, to set beside the sd over user redraws. Their differences on the "
             "same rows are in the table above, under the same pair of the steps' own runs.", "",
             "| method | step | seed | AUC | UAUC | sd AUC / UAUC | Δ own AUC / UAUC | warm AUC | cold AUC | rows |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def row(name, m, seed, own):
        test = m.get("test") or {}
        warm, cold = (m.get(k) or {} for k in ("test_warm", "test_cold"))
        delta = (f"{test['auc'] - own['auc']:+.4f} / {test['uauc'] - own['uauc']:+.4f}"
                 if own and name != split_seed(name)[0] else "–")
        return (f"| {label(split_seed(name)[0])} | {name} | {seed} | {_fmt(test.get('auc'))} | "
                f"{_fmt(test.get('uauc'))} | {_sd(redraw.get(name))} | {delta} | {_fmt(warm.get('auc'))} | "
                f"{_fmt(cold.get('auc'))} | {test.get('rows', '–')} |")

    shown_steps = set()
    for name, (m, seed, own_seed) in seeds.items():
        step = split_seed(name)[0]
        own = (metrics.get(step) or {}).get("test")
        if step not in shown_steps and step in metrics:
            lines.append(row(step, metrics[step], own_seed if own_seed is not None else "own", None))
        shown_steps.add(step)
        lines.append(row(name, m, seed, own))
    return [*lines, ""]


def _backbone_section(llama, name, where, rows):
    lines = [f"## Against `{name}`", "",
             f"Each LLM row of this report (`{llama}`) minus the same step's row of `{name}`'s report of the same "
             f"dataset and budget ([{where}/report.md]({where}/report.md), from its `steps/` records), where both "
             "scored the same test rows (the same number, drawn with the same sample seed). The other report's "
             "predictions stayed on the machine that made them, so the pair is not redrawn row by row: `sd Δ` "
             "combines the two rows' sds over user redraws as if independent, √(sd₁² + sd₂²). Both rows see the "
             "same users, so the sd of the paired difference is smaller; a difference within about twice this one "
             "is not a finding.", "",
             f"| method | step | rows | {llama} AUC | {name} AUC | Δ AUC | Δ UAUC | sd Δ AUC / UAUC | Δ warm AUC | "
             "Δ cold AUC |", "|---|---|---|---|---|---|---|---|---|---|"]
    for step, n, here, there, d_auc, d_uauc, sd, d_warm, d_cold in rows:
        lines.append(f"| {label(step)} | {step} | {n} | {here:.4f} | {there:.4f} | {d_auc:+.4f} | {d_uauc:+.4f} | "
                     f"{_sd(sd)} | {_fmt(d_warm, True)} | {_fmt(d_cold, True)} |")
    return [*lines, ""]


def _paper_cells(dataset):
    """The paper's AUC / UAUC, ours minus the paper's, rows: the columns after ours of a table with paper numbers."""
    def cells(row, m):
        _, _, _, key, source = row
        paper = paper_value(dataset, source, key) or (None, None)
        # values read off a figure keep the 3 decimals they were read with
        figure = source in ("warm_cold", "compression")
        p = [("≈" + f"{v:.3f}" if figure else _fmt(v)) if v is not None else "–" for v in paper]
        if m is None:
            return [*p, "–", "–", "–"]
        delta = [_fmt(_diff(m.get(metric), paper[i]), True) for i, metric in enumerate(("auc", "uauc"))]
        return [*p, *delta, str(m.get("rows", "–"))]

    return cells


def _table_without_paper(table, metrics, stale, redraw):
    """A report table of a dataset the paper has no numbers for: ours, each LLM row with its redraw spread."""
    def spread_cells(row, m):
        if m is None:
            return ["–", "–"]
        return [_sd(redraw.get(row[1]) if row[2] == "test" else None), str(m.get("rows", "–"))]

    return (["| method | step | AUC | UAUC | sd AUC / UAUC | rows |", "|---|---|---|---|---|---|"]
            + _table_rows(table, metrics, stale, spread_cells))


def _table_rows(table, metrics, stale, cells):
    """The rows of a report table: method, step, our AUC and UAUC, then `cells(row, m)` (m: the step's metrics
    of the row's split, None when it has none), and the warm / cold note under a table with such rows."""
    lines = []
    for row in table.rows:
        label, step, split = row[:3]
        m = metrics.get(step, {}).get(split) if step is not None else None
        if step is None:
            ours = ["–", "not implemented", "not implemented"]
        elif m is None:  # e.g. a split this run did not score
            why = ("to run again" if step in stale else "not run") if step not in metrics else f"no {split}"
            ours = [step, why, why]
        else:
            ours = [step, _fmt(m.get("auc")), _fmt(m.get("uauc"))]
        lines.append("| " + " | ".join([label, *ours, *cells(row, m)]) + " |")
    if any(split.startswith("test_") for _, _, split, _, _ in table.rows):
        lines += ["", warm_cold_note(metrics, [r[1] for r in table.rows])]
    lines.append("")
    return lines


def results_csv(metrics):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step", "split", "auc", "uauc", "rows", "users"])
    for step, splits in metrics.items():
        for split, m in splits.items():
            if isinstance(m, dict) and "auc" in m:
                w.writerow([step, split, m.get("auc"), m.get("uauc"), m.get("rows"), m.get("users")])
    return buf.getvalue()


def environment_info(dataset, budget, llama, options=()):
    import torch  # here: a plan never needs it, and it takes seconds to load

    info = environment(seed=None)
    gpus = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available()
            else [])
    info.update(dataset=dataset, budget=budget, options=list(options),
                backbone=llama or "the configs' model.llama_model (smollm2: the embedded SmolLM2-135M)",
                hardware={"machine": platform.machine(), "processor": platform.processor(),
                          "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpus": gpus})
    return info


def reads_of(run):
    """The steps a run read, from its config.yaml: the stage-1 adapter (model.ckpt, `runs/<step>/checkpoint_best`)
    and the encoder (model.rec_config.pretrained_path, `runs/<step>/rec_model.pth`)."""
    f = run / "config.yaml"
    if not f.is_file():
        return []
    cfg = records.flat(OmegaConf.to_container(OmegaConf.load(f)))
    paths = [cfg.get("model.ckpt"), cfg.get("model.rec_config.pretrained_path")]
    return [Path(p).parent.name for p in paths
            if p and (Path(p).parent.name in STEPS or split_seed(Path(p).parent.name)[1] is not None)]


def changed_inputs(reads, metrics):
    """Lines on the rows that read another encoder or adapter than the one whose row the report shows: `reads`
    {step: {dep: test_key of what it read, None for a rebuild that was not scored}}. That happens when a step's row
    is its record and the run here read a rebuild of it (trained again on this machine for its checkpoint), or when
    a recorded row's input ran again since."""
    out = []
    for step, read in reads.items():
        for dep, then in (read or {}).items():
            now = records.test_key(metrics.get(dep))
            if then is None and now:
                out.append(f"{step} read {dep} trained again on its machine for the checkpoint, not scored; the "
                           f"{dep} row is {dep}'s record")
            elif then and now and then != now:
                out.append(f"{step} read {dep} with test AUC {then[0]:.4f}; the report's {dep} row shows "
                           f"{now[0]:.4f} (trained on another machine or code)")
    return out


def shown(runs, stale=()):
    """The rows of report.md: (ran, known, from_runs, recorded, metrics). `ran`: {step: metrics} of every finished
    run here that is not stale, rebuilds included (what the steps that read them read); `known`: every record;
    `from_runs`: the runs here that are a row (not a rebuild); `recorded`: the records that are a row (no run
    here); `metrics`: {step: metrics} of every row, in steps.yaml's order."""
    ran = collect(runs, list(STEPS), stale)
    known = records.load(runs)
    rebuilds = records.rebuilt(runs, known)
    from_runs = {s: m for s, m in ran.items() if s not in rebuilds}
    recorded = {s: known[s] for s in STEPS if s in known and s not in from_runs and s not in stale}
    metrics = {s: from_runs[s] if s in from_runs else recorded[s]["metrics"] for s in STEPS
               if s in from_runs or s in recorded}
    return ran, known, from_runs, recorded, metrics


def other_seeds(runs, known, stale=()):
    """The runs of other seeds (`<step>.seed<N>`, reproduce.py --seed): (from_runs, recorded, metrics) as shown()
    gives them for the steps, ordered by step (steps.yaml) and seed."""
    names = {p.name for p in runs.glob("*.seed*") if split_seed(p.name)[1] is not None} if runs.is_dir() else set()
    names |= {n for n in known if split_seed(n)[1] is not None}
    order = {s: i for i, s in enumerate(STEPS)}
    names = sorted((n for n in names if split_seed(n)[0] in order and n not in stale),
                   key=lambda n: (order[split_seed(n)[0]], split_seed(n)[1]))
    rebuilds = records.rebuilt(runs, known)  # trained again for its checkpoint only: its row is its record
    from_runs = {n: m for n, m in collect(runs, names).items() if n not in rebuilds}
    recorded = {n: known[n] for n in names if n in known and n not in from_runs}
    metrics = {n: from_runs[n] if n in from_runs else recorded[n]["metrics"] for n in names
               if n in from_runs or n in recorded}
    return from_runs, recorded, metrics


def seed_pairs(seeds):
    """The report's pairs (tables.yaml comparisons) for each other seed in `seeds` (run names): the first step's
    run of that seed against the second's run of the same seed, or the second step's own run where it takes no
    seed (an encoder, or a step that trains nothing: read by every seed)."""
    out = []
    for a, b in COMPARISONS:
        for name in seeds:
            step, seed = split_seed(name)
            if step != a:
                continue
            out.append((name, seeded(b, seed) if takes_seed(b) else b))
    return out


def _run_of(record):
    return ((record or {}).get("config") or {}).get("run") or {}


def _seed_of(record):
    """The run.seed a record's run trained with (None when unknown)."""
    return _run_of(record).get("seed")


def _drawn(record):
    """What decides which test rows a run scored: (run.max_eval_rows, the seed of the subsample)."""
    run = _run_of(record)
    sample = run.get("sample_seed", -1)
    return run.get("max_eval_rows"), sample if sample is not None and sample >= 0 else run.get("seed")


def _backbone_of(recs):
    names = {((r.get("config") or {}).get("model") or {}).get("llama_model") for r in recs}
    names.discard(None)
    return ", ".join(sorted(names)) or EMBEDDED_LLM


def backbone_differences(here, there):
    """[(step, rows, AUC here, AUC there, Δ AUC, Δ UAUC, sd Δ, Δ warm AUC, Δ cold AUC)] of the LLM steps whose
    records `here` and `there` (two backbones' reports) scored the same test rows: the same count, drawn alike.
    sd Δ: the two records' sds over user redraws combined as if independent (None without both)."""
    out = []
    for step in STEPS:
        a, b = here.get(step), there.get(step)
        if not a or not b or not stages.get(STEPS[step].stage).llm:
            continue
        ma, mb = a["metrics"], b["metrics"]
        ta, tb = ma.get("test") or {}, mb.get("test") or {}
        if not ta or not tb or ta.get("rows") != tb.get("rows") or _drawn(a) != _drawn(b):
            continue
        sd = (tuple(math.hypot(x, y) for x, y in zip(a["redraw_sd"], b["redraw_sd"]))
              if a.get("redraw_sd") and b.get("redraw_sd") else None)
        warm, cold = (_diff((ma.get(k) or {}).get("auc"), (mb.get(k) or {}).get("auc"))
                      for k in ("test_warm", "test_cold"))
        out.append((step, ta["rows"], ta["auc"], tb["auc"], ta["auc"] - tb["auc"], ta["uauc"] - tb["uauc"], sd,
                    warm, cold))
    return out


def write_report(folder, dataset, budget, llama, options=(), ran_here=True, stale=()):
    """`ran_here`: steps ran on this machine in this invocation. Otherwise an existing environment.json is kept: it
    describes the machine and command that ran them (a report rewritten elsewhere must not claim this machine).
    `stale`: finished steps whose numbers no longer describe the plan (stale_steps); reported as to run again.
    The steps finished here (`runs/`) are joined by those known from their records only (records.py, `steps/`), and
    each finished run's record is written or replaced."""
    runs = folder / "runs"
    ran, known, from_runs, recorded, metrics = shown(runs, stale)
    seed_runs, seed_recorded, seeds = other_seeds(runs, known, stale)
    every = load_test_predictions(runs, from_runs, encoders=True)
    preds = {step: frame for step, frame in every.items() if stages.get(STEPS[step].stage).llm}  # the LLM rows'
    same = same_rows(preds, from_runs)
    spread = sample_spread(preds, same[0][3]) if same else []
    every.update(load_test_predictions(runs, seed_runs))
    # An encoder trained again for its checkpoint was scored too: where it scores as its record does, its
    # predictions are the record's row, so it pairs with the rows that read it (a seed's stage 2 among them)
    as_recorded = [s for s in ran if s not in from_runs  # what is not a row here is a rebuild: it has a record
                   and records.test_key(ran[s]) is not None
                   and records.test_key(ran[s]) == records.test_key(known[s]["metrics"])]
    every.update(load_test_predictions(runs, as_recorded, encoders=True))
    # only a report without the paper's numbers shows it (seconds per 1,000 test rows of each LLM row)
    redraw = {} if has_paper(dataset) else redraw_spreads({s: every[s] for s in [*preds, *seed_runs] if s in every})
    for step, record in {**recorded, **seed_recorded}.items():
        if record.get("redraw_sd") and not has_paper(dataset):
            redraw[step] = tuple(record["redraw_sd"])
    reads = {s: r.get("reads") for s, r in {**recorded, **seed_recorded}.items()}
    rows = {**metrics, **seeds}
    for step, m in {**from_runs, **seed_runs}.items():
        old = known.get(step, {}).get("metrics")
        if old and records.test_key(old) != records.test_key(m):
            print(f"[{step}] this run's test AUC / UAUC {records.test_key(m)} replace its record's "
                  f"{records.test_key(old)} ({records.folder_of(runs) / (step + '.json')})")
        read = {d: records.test_key(ran.get(d, rows.get(d))) for d in reads_of(runs / step)}
        records.write(runs, records.from_run(runs, step, m, redraw.get(step), read))
        reads[step] = read
    env = folder / "environment.json"
    if ran_here or not env.is_file():
        atomic_text(env, json.dumps(environment_info(dataset, budget, llama, options), indent=2) + "\n")
    info = json.loads(env.read_text(encoding="utf-8"))
    pairs = [*COMPARISONS, *seed_pairs(seeds)]
    computed = compare(every, pairs)
    order = {pair: i for i, pair in enumerate(map(tuple, COMPARISONS))}
    # each pair of another seed right under the same pair of the steps' own runs
    compared = sorted(records.merge_differences(runs, computed, rows),
                      key=lambda c: (order.get((split_seed(c[0])[0], split_seed(c[1])[0]), len(order)),
                                     split_seed(c[0])[1] or 0))
    written = records.load(runs)  # every row's record, those of this machine's runs just written
    seed_rows = {n: (m, split_seed(n)[1], _seed_of(written.get(split_seed(n)[0]))) for n, m in seeds.items()}
    others = None
    if llama and folder.name != budget:  # another backbone's report: next to the default backbone's
        there = folder.parent / budget
        known_there = records.load(there / "runs")
        theirs = {s: r for s, r in known_there.items() if s in STEPS}
        rows_there = backbone_differences({s: written[s] for s in metrics if s in written}, theirs)
        if rows_there:
            name = _backbone_of(theirs.values())
            others = (name, os.path.relpath(there, folder), rows_there)
    text = report_markdown(dataset, budget, metrics, same, spread, stale, llama, info, redraw, compared,
                           run_commits(runs, rows, {**recorded, **seed_recorded}), recorded,
                           changed_inputs({s: reads[s] for s in rows if s in reads}, rows), seed_rows, others)
    atomic_text(folder / "report.md", text)
    atomic_text(folder / "results.csv", results_csv(metrics))
    write_figures(folder, dataset, metrics)
    print(f"report: {folder / 'report.md'} (+ results.csv, environment.json, methods.png, warm_cold.png, "
          f"compression.png, code_length.png)")
