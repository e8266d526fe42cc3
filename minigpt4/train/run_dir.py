"""The run directory `{run.output_dir}/{job_id}/`: the config that reproduces the run (`config.yaml`, derived
values included), what the run ran on (`environment.json`: command, seed, library versions, git commit),
JSON-lines metric log, TensorBoard scalars, metrics.json and predictions. Every file is written atomically
(temporary file + rename)."""

import functools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from minigpt4.fileio import atomic_text, atomic_write  # noqa: F401  (also imported from here by older code)


def _clean(x):
    """JSON has no NaN: undefined metrics (e.g. UAUC with no eligible user) are written as null."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


@functools.lru_cache(maxsize=1)
def code_state():
    """(git commit, uncommitted changes?) of the code this process runs, read once per process: reproduce.py runs
    every step in one process with the code it loaded first, so a commit made while it runs must not be credited
    to its later steps."""
    root = Path(__file__).resolve().parents[2]

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD") or None
    # results/ holds reports, which a reproduction rewrites while its runs go on: not the code a run came from
    dirty = (bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")) if commit
             else None)
    return commit, dirty


def environment(seed):
    """What a run needs to be repeated: the command, the seed, library versions and the code's git commit."""
    from importlib.metadata import PackageNotFoundError, version

    libs = {}
    for name in ("torch", "transformers", "peft", "numpy", "pandas", "scikit-learn", "omegaconf", "gguf"):
        try:
            libs[name] = version(name)
        except PackageNotFoundError:
            libs[name] = None
    commit, dirty = code_state()
    return {"argv": sys.argv, "seed": seed, "python": platform.python_version(), "platform": platform.platform(),
            "libraries": libs, "git_commit": commit, "git_dirty": dirty,
            "world_size": int(os.environ.get("WORLD_SIZE", "1"))}


def free_path(path):
    """`path`, or an error when it exists: runs are never overwritten (checked before any heavy work)."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"run directory {path} exists; runs are never overwritten: "
                              "choose another run.job_id or remove the directory")
    return path


class RunDir:
    def __init__(self, path, config=None, is_main=True, resume_step=None):
        """A new run directory `path`, made by the main process with `config.yaml` (`config`: the config that
        reproduces the run, derived values included) and `environment.json`; other ranks write nothing.

        resume_step: continue the existing run directory `path` from this step; log lines of later steps
        (written after the resume point, before the run was killed) are dropped, and environment.json's `resumes`
        gains this process's environment."""
        self.is_main, self.path = is_main, Path(path)
        self._tb = None
        if resume_step is not None:
            log = self.path / "log.jsonl"
            if is_main and log.is_file():
                keep = [line for line in log.read_text(encoding="utf-8").splitlines()
                        if json.loads(line).get("step", 0) <= resume_step]
                atomic_text(log, "".join(line + "\n" for line in keep))
            env = self.path / "environment.json"
            if is_main and env.is_file():
                # the code may have changed since the run started: the report names every commit a run ran on
                info = json.loads(env.read_text(encoding="utf-8"))
                info.setdefault("resumes", []).append({"step": resume_step, **environment(info.get("seed"))})
                atomic_text(env, json.dumps(info, indent=2) + "\n")
            return
        if is_main:
            free_path(self.path).mkdir(parents=True)
            atomic_text(self.path / "config.yaml", OmegaConf.to_yaml(config))
            atomic_text(self.path / "environment.json", json.dumps(environment(config.run.seed), indent=2) + "\n")

    def log(self, record, step=None):
        """Append one JSON line to log.jsonl and mirror numeric values to TensorBoard."""
        if not self.is_main:
            return
        record = {"time": round(time.time(), 1), **record}
        with open(self.path / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(_clean(record)) + "\n")
        if step is not None:
            if self._tb is None:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.path / "tensorboard"))
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("time", "step", "epoch"):
                    self._tb.add_scalar(key, value, step)
            self._tb.flush()

    def write_json(self, name, data):
        if self.is_main:
            atomic_text(self.path / name, json.dumps(_clean(data), indent=2) + "\n")

    def write_predictions(self, name, uids, iids, labels, scores):
        if not self.is_main:
            return
        import pandas as pd

        df = pd.DataFrame({"uid": uids, "iid": iids, "label": labels, "score": scores})
        # 9 significant digits round-trip a float32 exactly: metrics recomputed from the file (reproduce.py's
        # same-rows table) then equal the run's own, with no ties made by rounding
        atomic_write(self.path / name, lambda tmp: df.to_csv(tmp, index=False, float_format="%.9g"))

    def close(self):
        if self._tb is not None:
            self._tb.close()
