"""Reproduce the paper's tables from one command (docs/REPRODUCE.md).

python reproduce.py --dataset ml-1m --budget cpu      # smoke | cpu | full; finished runs are reused

After the paper's rows, ranking steps (`rank_<step>`) rank each finished method's drawn test positives among the
same sampled negatives (rank.py); their HR@K / NDCG@K / MRR table is ranking.md, next to report.md.
"""

from minigpt4.experiments.reproduce import main

if __name__ == "__main__":
    main()
