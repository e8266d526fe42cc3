"""Model selection, as both training loops use it: after each evaluation a better valid AUC (or, with no valid
split, every epoch) makes that epoch the best, whose weights the loop keeps as its checkpoint; `run.patience`
evaluations in a row without one stop the run. `Progress` is an LLM run's whole loop state, the shape a resume
point's progress.json holds (minigpt4/train/resume.py)."""

import math
from dataclasses import asdict, dataclass, field, fields

from minigpt4.config import ConfigError


@dataclass
class Selection:
    best: float = -math.inf  # the best valid AUC so far
    best_epoch: int = -1  # the epoch whose weights are the checkpoint
    bad: int = 0  # evaluations since the best
    stopped: bool = False  # `patience` evaluations in a row without a better AUC

    def evaluated(self, epoch, auc, patience):
        """Record the valid AUC of `epoch` (None: no valid split, the latest epoch is kept); True when it is the
        new best, whose weights the caller then saves."""
        improved = auc is None or auc > self.best
        if improved:
            self.best, self.best_epoch, self.bad = (self.best if auc is None else auc), epoch, 0
        else:
            self.bad += 1
        self.stopped = self.bad >= patience
        return improved


@dataclass
class Progress(Selection):
    """Where an LLM training run is: the next epoch, the steps done in it and in all, the epoch's losses so far."""
    epoch: int = 0
    iter: int = 0
    step: int = 0
    losses: list = field(default_factory=list)

    def to_json(self):
        return asdict(self)

    @classmethod
    def from_json(cls, saved, where="progress.json"):
        """A progress.json as `to_json` wrote it; a key it does not know is an error naming it."""
        known = {f.name for f in fields(cls)}
        unknown = set(saved) - known
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; a resume point holds {sorted(known)}")
        return cls(**saved)
