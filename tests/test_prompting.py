"""Row -> prompt text (spec §1.5, §2.1, §2.5)."""

import numpy as np
import pandas as pd
import pytest

from minigpt4.config import REPO_ROOT
from minigpt4.data.splits import read_split
from minigpt4.prompting import (
    EMPTY_HISTORY,
    PromptError,
    build_prompts,
    fill_prompt,
    history_text,
    load_prompt,
    target_text,
    uses_ids,
)
from minigpt4.text_codes import CodeTable

PROMPTS = REPO_ROOT / "prompts"


def test_history_keeps_ten_most_recent_oldest_first_quoted():
    his = [0] + list(range(1, 13))
    titles = [""] + [f"T{i}" for i in range(1, 13)]
    assert history_text(his, titles) == ", ".join(f'"T{i}"' for i in range(3, 13))


def test_history_short_and_exactly_ten():
    assert history_text([0, 5, 6], ["", "A (1999)", "B, The (1980)"]) == '"A (1999)", "B, The (1980)"'
    his = [0] + list(range(1, 11))
    titles = [""] + [f"T{i}" for i in range(1, 11)]
    assert history_text(his, titles) == ", ".join(f'"T{i}"' for i in range(1, 11))
    # numpy arrays and np.str_ titles, as in the pickles
    assert history_text(np.array([0, 7]), np.array(["", "X"])) == '"X"'


def test_empty_history_is_unknown():
    assert EMPTY_HISTORY == "unknown"
    assert history_text([0], [""]) == "unknown"
    assert history_text([], []) == "unknown"


def test_target_is_stripped_and_quoted():
    assert target_text("  Heat (1995) ") == '"Heat (1995)"'
    assert target_text(np.str_("Heat (1995)")) == '"Heat (1995)"'


@pytest.mark.slow
def test_spec_worked_example_ml1m_train_row_12(ml1m_dir):
    train = read_split(ml1m_dir / "train_ood2.pkl")
    # The spec's "row 12" is both the index label and the position (train starts the concatenated frame).
    row = train.loc[12]
    assert train.index[12] == 12
    assert list(row["his"]) == [0, 3, 8, 9, 10, 11, 12] and row["label"] == 1
    expected_history = ('"American Beauty (1999)", "Superman II (1980)", "Patriot, The (2000)", '
                        '"Fifth Element, The (1997)", "Predator (1987)", "Terminator, The (1984)"')
    assert history_text(row["his"], row["his_title"]) == expected_history
    assert target_text(row["title"]) == '"Star Trek: The Motion Picture (1979)"'
    # Row 0, the first interaction of user 1: empty history.
    assert history_text(train.loc[0, "his"], train.loc[0, "his_title"]) == "unknown"

    prompt = load_prompt(PROMPTS / "tallrec_movie.txt")
    text = build_prompts(train.loc[[12]], prompt)[0]
    assert text == ("#Question: A user has given high ratings to the following movies: " + expected_history
                    + ". Leverage the information to predict whether the user would enjoy the movie titled "
                    '"Star Trek: The Motion Picture (1979)"? Answer with "Yes" or "No". \\n#Answer:')


def _rows():
    return pd.DataFrame({"uid": [1, 2], "iid": [2, 1], "label": [1, 0], "his": [[0, 1], [0]],
                         "his_title": [["", "Alpha (1990)"], [""]], "title": ["Beta (1991)", " Alpha (1990) "]})


def test_codes_fill_user_and_item_placeholders():
    user_bits = np.zeros((3, 32), dtype=np.uint8)
    user_bits[1, :8] = 1
    item_bits = np.zeros((3, 32), dtype=np.uint8)
    item_bits[2, -8:] = 1
    codes = CodeTable(user_bits, item_bits, "ipv4")
    prompt = load_prompt(PROMPTS / "collm_movie.txt")
    assert uses_ids(prompt)
    first, second = build_prompts(_rows(), prompt, codes)
    assert "encoded in the feature 255.0.0.0." in first
    assert 'titled "Beta (1991)" with the feature 0.0.0.255?' in first
    assert 'movies: "Alpha (1990)".' in first
    assert "encoded in the feature 0.0.0.0." in second and 'movies: unknown.' in second
    assert 'titled "Alpha (1990)" with the feature 0.0.0.0?' in second
    for text in (first, second):
        assert "<" not in text  # every placeholder filled

    binary = CodeTable(user_bits, item_bits, "binary")
    text = build_prompts(_rows().iloc[:1], prompt, binary)[0]
    assert "feature " + "1" * 8 + "0" * 24 + "." in text


def test_id_prompt_without_codes_is_an_error():
    prompt = load_prompt(PROMPTS / "collm_movie.txt")
    with pytest.raises(PromptError, match="<UserID>"):
        build_prompts(_rows(), prompt, None)
    with pytest.raises(PromptError):
        fill_prompt(prompt, '"A"', '"B"', user_code="0101", item_code=None)
    # a text-only prompt needs no codes
    assert len(build_prompts(_rows(), load_prompt(PROMPTS / "tallrec_movie.txt"), None)) == 2


def test_shipped_prompt_files():
    tallrec_movie = load_prompt(PROMPTS / "tallrec_movie.txt")
    assert "following movies:" in tallrec_movie and "the movie titled" in tallrec_movie
    assert "book" not in tallrec_movie and not uses_ids(tallrec_movie)
    collm_amazon = load_prompt(PROMPTS / "collm_amazon.txt")
    assert "following books:" in collm_amazon and "the book titled" in collm_amazon and "movie" not in collm_amazon
    assert collm_amazon.index("<UserID>") < collm_amazon.index("<TargetItemID>")
    tallrec_amazon = load_prompt(PROMPTS / "tallrec_amazon.txt")
    assert "following books:" in tallrec_amazon and not uses_ids(tallrec_amazon)
    collm_movie = load_prompt(PROMPTS / "collm_movie.txt")
    assert "following movies:" in collm_movie and uses_ids(collm_movie)
    assert load_prompt(PROMPTS / "hash_text.txt") == collm_movie
    for name in ("tallrec_movie", "tallrec_amazon", "collm_movie", "collm_amazon", "hash_text"):
        raw = (PROMPTS / f"{name}.txt").read_text(encoding="utf-8")
        lines = raw.splitlines()
        assert len(lines) == 4 and len(set(lines)) == 1, name  # four identical lines, as upstream
        assert lines[0].startswith("#Question: ")
        assert lines[0].endswith('Answer with "Yes" or "No". \\n#Answer:'), name  # literal backslash-n
        assert "\\n" in load_prompt(PROMPTS / f"{name}.txt")


def test_prompt_template_and_bad_files(tmp_path):
    assert load_prompt(PROMPTS / "tallrec_movie.txt", "<s>{}").startswith("<s>#Question:")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(PromptError, match="empty"):
        load_prompt(empty)
    no_target = tmp_path / "no_target.txt"
    no_target.write_text("#Question: <ItemTitleList>? \\n#Answer:\n")
    with pytest.raises(PromptError, match="target"):
        load_prompt(no_target)
