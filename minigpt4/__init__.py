"""BinLLM / CoLLM recommendation with LLMs. Importing the package registers every named component."""

from minigpt4 import encoders, tasks  # noqa: F401
from minigpt4.data import prepare, splits  # noqa: F401
from minigpt4.llm import recommender  # noqa: F401
from minigpt4.train import runner  # noqa: F401
