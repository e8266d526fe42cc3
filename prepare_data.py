"""Rebuild processed splits from the original dataset files. Usage:
python prepare_data.py movielens --raw ml-1m.zip --out data/ml-1m-rebuilt
python prepare_data.py ml-100k --raw data/raw/recbole-1.2.1-py3-none-any.whl --out data/ml-100k
python prepare_data.py amazon-book --reviews Books_5.json.gz --meta meta_Books.json.gz --out data/amazon_book
python prepare_data.py interactions --interactions ratings.csv --items items.csv --noun book --out data/mydata
(`python prepare_data.py DATASET --help` for each dataset's options; datasets are registered preparers.)"""

import sys

from minigpt4.data.prepare import main

if __name__ == "__main__":
    sys.exit(main())
