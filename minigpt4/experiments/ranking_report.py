"""ranking.md, next to report.md: the ranking steps (steps.yaml ranking_steps, `rank_<step>`) in one table, a row
per ranked step with HR@K, NDCG@K and MRR, each with its spread over redraws of the ranked users.

A row comes from the ranking step's run here (`runs/rank_<step>/metrics.json`) or, without one, from its record
(`steps/rank_<step>.json`, records.py), which this module writes for every finished ranking run, as report.py does
for the other steps. report.md leaves the ranking steps out."""

import json
import math

from minigpt4.experiments import records
from minigpt4.experiments.definitions import RANKING_STEPS, STEP_LABEL
from minigpt4.experiments.report import changed_inputs, collect, provenance, run_commits, shown
from minigpt4.fileio import atomic_text

FILE = "ranking.md"
COLUMNS = (("HR@1", "hr@1"), ("HR@5", "hr@5"), ("HR@10", "hr@10"), ("NDCG@5", "ndcg@5"), ("NDCG@10", "ndcg@10"),
           ("MRR", "mrr"))


def random_ranker(negatives):
    """The expected metrics of a ranker that orders the 1 + N candidates at random (no ties): the positive's rank is
    uniform on 1..1+N, so HR@K = min(K, 1+N)/(1+N), NDCG@K = sum_{r<=K} 1/log2(r+1)/(1+N), MRR = H(1+N)/(1+N)."""
    n = 1 + negatives
    out = {}
    for _, key in COLUMNS:
        kind, _, k = key.partition("@")
        top = min(int(k), n) if k else n
        if kind == "hr":
            out[key] = top / n
        else:  # ndcg@K, or mrr over every rank
            out[key] = sum(1 / (math.log2(r + 1) if kind == "ndcg" else r) for r in range(1, top + 1)) / n
    return out


def _cell(value, sd):
    return "–" if value is None else f"{value:.4f}" + (f" ± {sd:.4f}" if sd is not None else "")


def _settings(m):
    """What names the candidates a row ranked: the settings they were drawn with (run.rank_*)."""
    return ", ".join(f"run.{k} {v}" for k, v in sorted((m.get("settings") or {}).items())) or "not recorded"


def ranking_markdown(dataset, budget, rows, stale=(), env=None, runs_code=None, recorded=(), changed=()):
    """`rows`: {rank step: its metrics.json content} of the finished ranking steps; `recorded`: those known from
    their records only; `changed`: changed_inputs() of the ranking steps (a row that ranked another run than the
    one report.md shows for its step)."""
    lines = [f"# Ranking on {dataset}, budget `{budget}`", ""]
    if budget == "smoke":
        lines += ["**Smoke budget: a few training steps on tiny samples; it checks the pipeline, its numbers mean "
                  "nothing.**", ""]
    drawn = {}
    for step, m in rows.items():
        drawn.setdefault(_settings(m), []).append(step)
    if rows:
        first = next(iter(rows.values()))
        s, n = first.get("settings") or {}, first.get("negatives")
        k = s.get("rank_positives")
        per_user = f"{k} positive test row(s) of each" if k else "every positive test row of each"
        lines += [f"Each finished method ranks drawn positive test rows, each among {n} sampled negatives "
                  "(`rank.py`; the step `rank_<step>` of each method, after every other step). Candidates "
                  f"(`run.rank_*`): {first.get('users')} test users with a positive test row, drawn with seed "
                  f"{s.get('rank_seed')} (`run.rank_users` {s.get('rank_users')}, 0 = all), {per_user} "
                  f"({first.get('positives')} in all), each with {n} negatives drawn uniformly from the items its "
                  "user never interacted with in any split; an LLM's prompt history is the positive's test row's. "
                  "A negative scored equal to the positive ranks above it (ties count against the positive). "
                  "Each cell: the metric ± its standard deviation over 200 redraws of the ranked users (whole "
                  "users, with replacement).", ""]
        if len(drawn) == 1:
            lines += ["Every row ranks the same candidates (`runs/ranking_candidates.json`, drawn by the first "
                      "ranking step; every row's metrics name the same settings).", ""]
        else:
            lines += ["**The rows did NOT rank the same candidates: they were drawn with other settings, so rows of "
                      "different groups cannot be compared:** "
                      + "; ".join(f"{', '.join(steps)}: {key}" for key, steps in drawn.items()) + ".", ""]
        floor = random_ranker(n)
        lines += [f"Floor: a random ranker's expectation with 1 + {n} candidates, HR@10 = 10/(1+N) = "
                  f"{floor['hr@10']:.4f} and MRR = H(1+N)/(1+N) = {floor['mrr']:.4f} (row `random`); a constant "
                  "scorer ranks every positive last (ties).", ""]
    else:
        lines += ["No ranking step has finished yet (`rank.py`, the step `rank_<step>` of each method).", ""]
    lines.append(provenance(env, runs_code))
    lines.append("")
    if recorded:
        lines += [f"Rows known from their records only (`steps/<step>.json`): {', '.join(recorded)}.", ""]
    if changed:
        lines += ["**Rows that ranked another run than report.md's row of that step:** " + "; ".join(changed) + ".",
                  ""]
    lines += [f"Ranking steps finished: {len(rows)} of {len(RANKING_STEPS)}.", "",
              "| method | step | users | positives | " + " | ".join(h for h, _ in COLUMNS) + " |",
              "|---|---|---|---|" + "---|" * len(COLUMNS)]
    for name, spec in RANKING_STEPS.items():
        label = STEP_LABEL.get(spec.ranks, spec.ranks)
        m = rows.get(name)
        if m is None:
            cells = ["to run again" if name in stale else "not run yet"] + [""] * (len(COLUMNS) + 1)
        else:
            got, sd = m.get("metrics") or {}, m.get("sd_over_user_redraws") or {}
            cells = [m.get("users"), m.get("positives")] + [_cell(got.get(k), sd.get(k)) for _, k in COLUMNS]
        lines.append("| " + " | ".join(map(str, [label, spec.ranks, *cells])) + " |")
    if rows:
        floor = random_ranker(next(iter(rows.values())).get("negatives"))
        lines.append("| " + " | ".join(["random (expected)", "–", "–", "–"] + [_cell(floor[k], None)
                                                                             for _, k in COLUMNS]) + " |")
    lines.append("")
    return "\n".join(lines)


def write_ranking_report(folder, dataset, budget, stale=()):
    """Write `ranking.md` next to report.md, and the record of every finished ranking run here. `stale`: steps
    whose numbers no longer describe the plan (run.stale_steps), shown as to run again. Call it after
    report.write_report (whose environment.json it names)."""
    runs = folder / "runs"
    ran, known, _, _, shown_rows = shown(runs, stale)
    here = collect(runs, list(RANKING_STEPS), stale)
    recorded = {s: known[s] for s in RANKING_STEPS if s in known and s not in here and s not in stale}
    rows = {s: here[s] if s in here else recorded[s]["metrics"] for s in RANKING_STEPS if s in here or s in recorded}
    reads = {s: r.get("reads") for s, r in recorded.items()}
    for step, m in here.items():
        ranked = RANKING_STEPS[step].ranks
        # what it ranked: the run here (a rebuild too), else the row report.md shows (a record)
        read = {ranked: records.test_key(ran.get(ranked, shown_rows.get(ranked)))}
        records.write(runs, records.from_run(runs, step, m, None, read))
        reads[step] = read
    env_file = folder / "environment.json"
    env = json.loads(env_file.read_text(encoding="utf-8")) if env_file.is_file() else None
    text = ranking_markdown(dataset, budget, rows, stale, env, run_commits(runs, rows, recorded), list(recorded),
                            changed_inputs({s: reads[s] for s in rows if s in reads}, shown_rows))
    atomic_text(folder / FILE, text)
    print(f"ranking report: {folder / FILE}")
