"""Putting the rows of a report on common ground: the rows scored on the whole test split and those scored on a
subsample, compared on the same rows (`same_rows`), how much the draw of the subsample alone moves a row
(`sample_spread`), and the differences of the report's pairs of steps on the rows both scored (`compare`)."""

import numpy as np
import pandas as pd

from minigpt4 import stages
from minigpt4.data.splits import subsample
from minigpt4.experiments.definitions import FULL_TEST_STEPS, STEPS, split_seed
from minigpt4.metrics import evaluate_scores, redraw_difference


def load_test_predictions(runs, metrics, encoders=False):
    """{run: its predictions_test.csv} of every finished LLM row (and stage-0 row with `encoders`) of `metrics`
    (steps, or other seeds' runs `<step>.seed<N>`), in the order of `metrics`: read once per report."""
    return {s: pd.read_csv(runs / s / "predictions_test.csv") for s in metrics
            if (encoders or stages.get(STEPS[split_seed(s)[0]].stage).llm)
            and (runs / s / "predictions_test.csv").is_file()}


def compare(preds, pairs, draws=200):
    """[(a, b, rows, AUC a − b, UAUC a − b, sd AUC, sd UAUC)] for each pair of steps (a, b) that both have
    predictions, on the (user, item) rows both scored: an encoder scored on the whole test split is compared with
    an LLM row on the LLM row's subsample. The sd is that of the difference over `draws` redraws of those rows'
    users (minigpt4.metrics.redraw_difference), smaller than either row's own spread because both see the same
    users. `preds`: load_test_predictions(..., encoders=True)."""
    out = []
    for a, b in pairs:
        if a not in preds or b not in preds:
            continue
        rows = preds[a].merge(preds[b], on=["uid", "iid"], suffixes=("_a", "_b"), validate="one_to_one")
        if rows.empty or rows["uid"].nunique() < 2:
            continue  # nothing in common, or one user: no redraw can move it
        users, labels = rows["uid"].to_numpy(), rows["label_a"].to_numpy()
        ma = evaluate_scores(users, labels, rows["score_a"].to_numpy())
        mb = evaluate_scores(users, labels, rows["score_b"].to_numpy())
        sd = redraw_difference(users, labels, rows["score_a"].to_numpy(), rows["score_b"].to_numpy(), draws)
        out.append((a, b, len(rows), ma["auc"] - mb["auc"], ma["uauc"] - mb["uauc"], *sd))
    return out


def same_rows(preds, metrics):
    """Every finished LLM row on the test subsample the subsampled rows were scored on: [(step, auc, uauc, rows)].
    `preds`: load_test_predictions().

    The subsampled rows (cpu budget) and the full-test rows score different rows, and the subsample is not a
    miniature of the test split (it holds whole users, so its warm/cold mix differs). Restricting the full-test
    rows' predictions to the subsample's (user, item) pairs puts every LLM row on the same rows. Empty when no
    subsampled row has finished or nothing was subsampled."""
    sampled = [s for s in preds if s not in FULL_TEST_STEPS]
    full = [s for s in preds if s in FULL_TEST_STEPS]
    if not sampled or not full:
        return []
    pairs = preds[sampled[0]][["uid", "iid"]]
    if len(pairs) >= metrics[full[0]]["test"]["rows"]:
        return []
    out = []
    for step, frame in preds.items():
        rows = pairs.merge(frame, on=["uid", "iid"], validate="one_to_one")
        m = evaluate_scores(rows["uid"].to_numpy(), rows["label"].to_numpy(), rows["score"].to_numpy())
        out.append((step, m["auc"], m["uauc"], len(rows)))
    return out


def sample_spread(preds, n, draws=50):
    """How much drawing the test subsample alone moves a row: [(step, sd AUC, sd UAUC)] of each full-test LLM row
    over `draws` redraws (seeds 0..draws-1) of an n-row subsample of whole users, the way the runner draws it.
    `preds`: load_test_predictions().

    The subsampled rows' differences from the paper (which scored the whole split) are only meaningful beyond this
    spread; the full-test rows' predictions measure it for free."""
    out = []
    for step, frame in preds.items():
        if step not in FULL_TEST_STEPS or n >= len(frame):
            continue
        values = []
        for seed in range(draws):
            d = subsample(frame, n, seed)
            m = evaluate_scores(d["uid"].to_numpy(), d["label"].to_numpy(), d["score"].to_numpy())
            values.append((m["auc"], m["uauc"]))
        sd = np.nanstd(np.array(values, dtype=float), axis=0)
        out.append((step, float(sd[0]), float(sd[1])))
    return out
