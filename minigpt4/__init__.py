"""BinLLM / CoLLM recommendation with LLMs. Importing the package registers every named component."""

from minigpt4 import encoders, tasks  # noqa: F401
from minigpt4.data import prepare, splits  # noqa: F401
from minigpt4.llm import recommender  # noqa: F401
from minigpt4.recipes import finetune_llm  # noqa: F401  (run.runner: rec_runner_base)
from minigpt4.train import optim  # noqa: F401  (run.lr_sched: linear_warmup_cosine_lr)
