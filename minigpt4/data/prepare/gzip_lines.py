"""Streaming a gzip file of JSON lines (the Amazon review dumps), one line at a time, with a progress bar
over the compressed bytes. The files are tens of GB uncompressed: they are never held in memory."""

import gzip
import json
import zlib
from pathlib import Path

from tqdm import tqdm

from minigpt4.data.splits import DataError


def lines(path, desc, how_to_get):
    """Yield (line number from 1, raw bytes) of gzip file `path`. Errors name the file and what to do."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file. {how_to_get}")
    number = 0
    with open(path, "rb") as raw, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=desc,
                                       mininterval=1.0) as bar:
        try:
            with gzip.GzipFile(fileobj=raw) as unzipped:
                for number, line in enumerate(unzipped, 1):
                    yield number, line
                    if number % 16384 == 0:
                        bar.update(raw.tell() - bar.n)
        except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError; EOFError = truncated
            where = f"after line {number}" if number else "at the start"
            raise DataError(f"{path}: cannot be read as gzip {where} ({type(err).__name__}: {err}). "
                            f"{how_to_get}") from None
        bar.update(raw.tell() - bar.n)


def parse(line, path, number, what):
    """One JSON object from a line; a clear error for anything else."""
    try:
        obj = json.loads(line)
    except ValueError as err:
        raise DataError(f"{path}: line {number} is not JSON ({err}); expected one {what} object per line "
                        f"(the 2018 Amazon review data format): {line[:120]!r}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: line {number} holds a JSON {type(obj).__name__}, expected one {what} "
                        f"object per line")
    return obj
