"""`python reproduce.py`: plan every run, run what is missing, write the report.

`python reproduce.py --dataset ml-1m --budget cpu` runs every method of BinLLM's Tables 2 and 3, the warm/cold
and compression figures and a code-length ablation from the shipped configs (`train_configs/<prefix>_<method>.yaml`),
overriding only what the budget and the wiring between runs need. Runs go to `<out>/<dataset>/<budget>/runs/<step>`;
a step whose `metrics.json` exists is reused, so an interrupted reproduction continues with the same command.
The report (`report.md`, `results.csv`, `environment.json`, PNG figures) is written next to `runs/`, with a record
of each finished step's numbers in `steps/` (records.py): committed, they let the reproduction continue on another
machine, where `runs/` is absent.
`--dataset ml-100k` runs the same steps on MovieLens-100K, for which the paper has no numbers: its report compares
the rows with each other, each with its spread over redraws of the test users.
After every other step come the ranking steps (`rank_<step>`, steps.yaml ranking_steps): each ranks the drawn
positive test rows among sampled negatives with a finished step's run (rank.py), every one the same candidates
(`runs/ranking_candidates.json`). They are reused, recorded in `steps/` and rerun when stale like the other steps;
their table (HR@K, NDCG@K, MRR) is `ranking.md`, written next to report.md whenever it is; report.md leaves them out.
"""

import argparse
import os
import sys

from minigpt4.experiments import records
from minigpt4.experiments.definitions import BUDGETS, DATASETS, ReproduceError
from minigpt4.experiments.plan import check_data, plan, print_plan
from minigpt4.experiments.ranking_report import write_ranking_report
from minigpt4.experiments.report import write_report
from minigpt4.experiments.run import needed_steps, run_step, stale_steps
from minigpt4.train.run_dir import code_state


def reproduce(dataset, budget, out="results", data=None, llama=None, only=None, options=(), dry=False,
              report_only=False, seed=None):
    """Run the plan (reusing finished steps) and write the report.
    Returns {step: 'reused' | 'recorded' | 'rebuilt' | 'resumed' | 'ran'}.
    `dry`: print the plan and its estimate only. `report_only`: write the report of the finished steps only (after
    a reproduction was killed before it could write one)."""
    steps, runs, data = plan(dataset, budget, out, data, llama, only, options, seed)
    if runs.exists() or not dry:  # a plan of a clone where nothing ran needs no data, only its records
        check_data(dataset, data)
    # a record stands in for a run where this machine has none (a run directory here, even an interrupted one, is
    # this machine's own and resumes), or only a rebuild for its checkpoint
    recorded = {s: r for s, r in records.load(runs).items()
                if not (runs / s).exists() or records.rebuild_marker(runs, s).is_file()}
    # judged on the whole plan, so the report leaves out stale rows outside --only too
    stale = stale_steps(plan(dataset, budget, out, data, llama, None, options)[0], runs, recorded)
    if seed is not None:  # and the other seed's runs, which read the same encoders
        stale.update(stale_steps(plan(dataset, budget, out, data, llama, None, options, seed)[0], runs, recorded))
    needed = needed_steps(steps, runs, stale, recorded)
    print_plan(steps, dataset, budget, runs, stale, llama, recorded, needed)
    if report_only:
        write_report(runs.parent, dataset, budget, llama, options, ran_here=False, stale=stale)
        write_ranking_report(runs.parent, dataset, budget, stale=stale)
    if dry or report_only:
        return {}
    runs.mkdir(parents=True, exist_ok=True)
    done = {}
    try:
        for step in steps:
            done[step.name] = run_step(step, runs, stale.get(step.name), recorded.get(step.name),
                                       step.name in needed)
    finally:  # whatever finished is reported, also when a step fails
        write_report(runs.parent, dataset, budget, llama, options,
                     ran_here=any(how in ("ran", "resumed") for how in done.values()),
                     stale=set(stale) - set(done))
        write_ranking_report(runs.parent, dataset, budget, stale=set(stale) - set(done))
    return done


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Reproduce BinLLM's tables: every run, then report.md with the paper's "
                                            "numbers next to ours (a dataset the paper has no numbers for, ml-100k: "
                                            "the rows next to each other). Finished runs are reused.")
    p.add_argument("--dataset", default="ml-1m", choices=sorted(DATASETS))
    p.add_argument("--budget", default="cpu", choices=sorted(BUDGETS),
                   help="smoke: minutes, checks the wiring; cpu: ~13 h on 2 AVX2 cores with SmolLM2 in fp32 "
                        "(+ up to ~4 h of ranking) "
                        "for ml-1m (resumable; --plan prints the estimate of a dataset); full: the shipped recipes "
                        "on all data, for a GPU; paper: the upstream protocol key by key (docs/PAPER_PROTOCOL.md), "
                        "for a 7B backbone on GPUs (ml-1m and amazon-book only)")
    p.add_argument("--out", default="results", help="runs go to OUT/<dataset>/<budget>/runs/ (<budget>-<name> for a "
                                                    "named backbone other than smollm2), the report next to them")
    p.add_argument("--llama", help="backbone of the LLM rows: an embedded one (smollm2, gemma3-270m) or a Hugging Face "
                                   "directory or .gguf; default: the configs' smollm2")
    p.add_argument("--data", help="processed data directory (default: "
                                  + ", ".join(f"{ds['data']} for {name}" for name, ds in DATASETS.items()) + ")")
    p.add_argument("--only", help="comma-separated steps to run (their dependencies are added), e.g. binmf,binllm "
                                  "or rank_binllm (ranks binllm's run)")
    p.add_argument("--options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides added last to every LLM and ranking step, for the machine's speed settings, e.g. "
                        "run.batch_size_eval=128")
    p.add_argument("--seed", type=int,
                   help="another seed of the LLM steps that train: runs/<step>.seed<N>/ beside each step's own run, "
                        "on the same test rows and encoders (with --only: e.g. --only tallrec,binllm --seed 43); the "
                        "report shows each seed's rows and differences next to the step's own")
    p.add_argument("--plan", action="store_true",
                   help="print the steps, what is done and the time estimate; run nothing")
    p.add_argument("--report", action="store_true", help="write the report of the finished steps; run nothing")
    return p.parse_args(argv)


def main(argv=None):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    code_state()  # the commit of the code this process loaded, before a long reproduction sees the tree change
    args = parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    try:
        return reproduce(args.dataset, args.budget, args.out, args.data, args.llama, only, args.options,
                         dry=args.plan, report_only=args.report, seed=args.seed)
    except ReproduceError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
