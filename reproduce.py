"""Reproduce the paper's tables from one command (docs/REPRODUCE.md).

python reproduce.py --dataset ml-1m --budget cpu      # smoke | cpu | full; finished runs are reused
"""

from minigpt4.experiments.reproduce import main

if __name__ == "__main__":
    main()
