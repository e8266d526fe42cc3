"""Ranking: a finished run ranks each drawn positive test row among sampled negatives (HR@K, NDCG@K, MRR;
minigpt4/recipes/rank.py).

Usage: python rank.py --cfg-path train_configs/ml100k_rank.yaml --options run.rank_run=runs/ml100k/binllm \
    run.job_id=rank_binllm [run.rank_users=200 ...]"""

from minigpt4.cli import script_main

if __name__ == "__main__":
    script_main("ranking", "Rank each drawn positive test row among sampled negatives with a finished run")
