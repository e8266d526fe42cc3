"""The whole run's time left, printed with the training log lines: the optimizer steps left times the measured
step time, plus the rows left to score (the valid split after each epoch left, then the test splits) divided by
the measured scoring speed. The progress bars cover one epoch or one split; this line covers the run."""

# Until a split has been scored, a scored row is taken to cost a third of a trained row: a forward against a
# forward and a backward (about two forwards' work), a rough guess that the line marks as such.
SCORE_VS_TRAIN_SPEED = 3.0


def rows_to_score(splits, names):
    """Distinct (user, item) pairs over the named splits: the final test scores each prompt once (test_warm and
    test_cold are rows of test), so these are the rows it will score."""
    pairs = set()
    for name in dict.fromkeys(names):
        split = splits[name]
        pairs.update(zip(split.uids.tolist(), split.iids.tolist()))
    return len(pairs)


def duration(seconds):
    """`45 s`, `12 min`, `3.4 h`."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class RunClock:
    """Measured step time and scoring speed of a training run, and the time left from a point of it.

    steps_per_epoch x epochs optimizer steps of `rows_per_step` rows; `valid_rows` scored after each epoch (0: no
    validation); `test_rows` scored at the end. Early stopping can end the run sooner: the estimate is the most
    the run can take at the measured speeds."""

    def __init__(self, epochs, steps_per_epoch, rows_per_step, valid_rows, test_rows):
        self.epochs, self.steps_per_epoch, self.rows_per_step = epochs, steps_per_epoch, rows_per_step
        self.valid_rows, self.test_rows = valid_rows, test_rows
        self._first_s, self._step_s, self._steps = None, 0.0, 0
        self._score_s, self._scored = 0.0, 0

    def stepped(self, seconds):
        """One optimizer step took `seconds`."""
        self._steps += 1
        if self._first_s is None:  # warm-up (allocations, lazy initialisation): kept out once others are timed
            self._first_s = seconds
        else:
            self._step_s += seconds

    def scored(self, rows, seconds):
        """`rows` rows were scored in `seconds`."""
        if rows and seconds > 0:
            self._score_s += seconds
            self._scored += rows

    @property
    def step_seconds(self):
        """The mean step time: the first step's until a second is timed, then the mean of the others."""
        if self._steps > 1:
            return self._step_s / (self._steps - 1)
        return self._first_s

    @property
    def score_rows_per_s(self):
        """The measured scoring speed, else the guess from the training speed (None before either)."""
        if self._scored:
            return self._scored / self._score_s
        if self._steps:
            return SCORE_VS_TRAIN_SPEED * self.rows_per_step / self.step_seconds
        return None

    def _left(self, step, epoch):
        """(optimizer steps, rows to score) left after `step` steps, when `epoch` is the first epoch whose
        validation has not run."""
        return (max(self.epochs * self.steps_per_epoch - step, 0),
                self.valid_rows * max(self.epochs - epoch, 0) + self.test_rows)

    def seconds_left(self, step, epoch):
        """Seconds left at that point (see _left); None before any step was timed."""
        if not self._steps:
            return None
        steps_left, rows_left = self._left(step, epoch)
        return steps_left * self.step_seconds + rows_left / self.score_rows_per_s

    def describe(self, step, epoch):
        """`run: ~12 min left at most (26 steps x 13.2 s, 400 rows to score at 6.1 rows/s)`, or '' before any step."""
        left = self.seconds_left(step, epoch)
        if left is None:
            return ""
        steps_left, rows_left = self._left(step, epoch)
        bound = " at most" if self.valid_rows else ""  # early stopping can only end it sooner
        parts = [f"{steps_left} step{'' if steps_left == 1 else 's'} x {self.step_seconds:.1f} s"]
        if rows_left:  # a run with no valid or test split scores nothing: say nothing about scoring
            speed = f"{self.score_rows_per_s:.1f} rows/s" + ("" if self._scored else ", guessed from training")
            parts.append(f"{rows_left:,} rows to score at {speed}")
        return f"run: ~{duration(left)} left{bound} ({', '.join(parts)})"
