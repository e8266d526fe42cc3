"""Dataset row -> prompt string (spec §1.5 and §2).

The history is the user's most recent <= 10 liked titles, oldest first, each in double quotes, joined by ", ".
An empty history is written `unknown` (the upstream wrote the typo `unkow`). BinLLM fills `<UserID>` and
`<TargetItemID>` with code strings; CoLLM keeps them as slots that the tokenizer step turns into vector positions
(`minigpt4/batching.py`); TALLRec prompts have no ID placeholders. Prompt files keep the upstream's
literal backslash-n before `#Answer:` so the token sequence matches the upstream's.
"""

import re
from pathlib import Path

from minigpt4.errors import PromptError  # noqa: F401  (raised here; importable from here as before)

MAX_HISTORY = 10
EMPTY_HISTORY = "unknown"
PLACEHOLDERS = ("<ItemTitleList>", "<TargetItemTitle>", "<UserID>", "<TargetItemID>")
ID_PLACEHOLDERS = ("<UserID>", "<TargetItemID>")
# the nouns of the shipped prompt files, replaced by model.item_noun (a dataset's own word for its items)
ITEM_NOUNS = re.compile(r"\b(?:movie|book)s?\b")




def load_prompt(path, template="{}", noun="", plural=""):
    """The first line of a prompt file, wrapped in `template`. All upstream files repeat one line 4 times.
    noun (plural: default noun + s): what an item is called, in place of the shipped prompts' movie(s) / book(s)."""
    lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise PromptError(f"prompt file {path} is empty; it needs one template line")
    prompt = template.format(lines[0])
    if noun:
        prompt, n = ITEM_NOUNS.subn(lambda m: (plural or noun + "s") if m[0].endswith("s") else noun, prompt)
        if n == 0:
            raise PromptError(f"model.item_noun is {noun!r} but prompt file {path} has no 'movie(s)' or 'book(s)' "
                              "to replace; write the noun into the prompt file and leave model.item_noun empty")
    if "<TargetItemTitle>" not in prompt and "<TargetItemID>" not in prompt:
        raise PromptError(f"prompt file {path}: the template names no target (<TargetItemTitle> or <TargetItemID>)")
    for bad in ("<ItemIDList>", "<DCNFeature>"):
        if bad in prompt:
            raise PromptError(f"prompt file {path}: placeholder {bad} is not supported")
    return prompt


def model_prompt(model_cfg, path=None):
    """The prompt a model config asks for: its file (default model.prompt_path) in model.prompt_template, with
    model.item_noun."""
    m = model_cfg
    return load_prompt(path or m.prompt_path, m.prompt_template, m.item_noun, m.item_noun_plural)


def uses_ids(prompt):
    return any(p in prompt for p in ID_PLACEHOLDERS)


def history_text(his, his_title, max_items=MAX_HISTORY):
    """`his` = [0] + liked iids (chronological), `his_title` aligned with it; returns the quoted title list."""
    n = min(len(his) - 1, max_items) if len(his) and his[0] == 0 else min(len(his), max_items)
    titles = list(his_title)[-n:] if n > 0 else []
    titles = [f'"{t}"' for t in titles if t]
    return ", ".join(titles) if titles else EMPTY_HISTORY


def target_text(title):
    return f'"{str(title).strip()}"'


def fill_prompt(prompt, history, target, user_code=None, item_code=None, slots=False):
    """slots=True leaves <UserID>/<TargetItemID> in place for CoLLM's vectors."""
    text = prompt.replace("<ItemTitleList>", history).replace("<TargetItemTitle>", target)
    if uses_ids(prompt) and not slots:
        if user_code is None or item_code is None:
            raise PromptError("the prompt has <UserID>/<TargetItemID> but no codes were given: "
                              "use a text-only prompt (prompts/tallrec_*.txt), run.mode v3 (codes) or CoLLM slots")
        text = text.replace("<UserID>", user_code).replace("<TargetItemID>", item_code)
    return text


def build_prompts(rows, prompt, codes=None, slots=False):
    """rows: DataFrame with uid, iid, his, his_title, title. codes: a CodeTable or None; slots: keep the ID
    placeholders for CoLLM. Returns list[str]."""
    if codes is None and uses_ids(prompt) and not slots:
        fill_prompt(prompt, "", "")  # raises the explanatory error
    out = []
    for uid, iid, his, his_title, title in zip(rows["uid"], rows["iid"], rows["his"], rows["his_title"], rows["title"]):
        u = codes.user_code(uid) if codes is not None else None
        i = codes.item_code(iid) if codes is not None else None
        out.append(fill_prompt(prompt, history_text(his, his_title), target_text(title), u, i, slots))
    return out
