"""The experiment layer: reproducing the paper's tables (`python reproduce.py`).

Data: `steps.yaml` (the runs and their wiring), `budgets.yaml` (the overrides of each budget), `paper_results.yaml`
(the published numbers) and `tables.yaml` (the report's tables), read by `definitions.py`. Code, one idea per
module: `plan.py` (the steps of a dataset and budget, and `--plan`), `run.py` (running them like make: reuse,
resume, rerun what is stale), `report.py` (report.md, results.csv, environment.json), `ranking_report.py`
(ranking.md: the ranking steps' HR@K / NDCG@K / MRR), `records.py` (each finished step's numbers in steps/),
`spread.py` (the LLM rows on the same test rows), `figures.py` (the PNG figures), and `reproduce.py`, the command
line tying them together.
The paper budget's per-step settings are `minigpt4/protocols/paper.yaml` (minigpt4/protocol.py).
"""
