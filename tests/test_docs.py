"""The README stays a front page and every reference in README.md and docs/*.md resolves inside the repository.

A link that 404s on GitHub, or a "spec §N" that points at a file outside the repository, is a dead end for a
reader; these checks read the Markdown as GitHub renders it (fenced code is not Markdown, headings give anchors).
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
README_MAX_BYTES = 10_240  # issue 20: "README <= 10 KB"; measurements belong in results/ and docs/

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+).*?\1", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SPEC = re.compile(r"\bspec\s+§\s*\d", re.I)  # "spec §2.6", also broken over a line
UPSTREAM_TARGET = re.compile(r"^(?:\./)?(?:docs/)?UPSTREAM\.md(?:#|$)")


def prose(text):
    """The text outside fenced code blocks, line numbers kept (fenced lines become empty)."""
    out, fenced = [], None
    for line in text.splitlines():
        m = FENCE.match(line)
        if fenced is None and m:
            fenced = m.group(1)
            out.append("")
        elif fenced is not None:
            if line.strip().startswith(fenced):
                fenced = None
            out.append("")
        else:
            out.append(line)
    return "\n".join(out)


def link_targets(text):
    """Every link target of a page's prose (inline and reference-style), code spans left out."""
    body = INLINE_CODE.sub(lambda m: " " * len(m.group(0)), prose(text))
    return LINK.findall(body) + REF_DEF.findall(body)


def slug(heading):
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation removed, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # keeps letters, digits, _, - and spaces (unicode-aware)
    return text.replace(" ", "-")


def anchors(path):
    """The anchors a Markdown file's headings produce, with GitHub's -1, -2 suffixes for repeats."""
    seen, out = {}, set()
    for line in prose(path.read_text(encoding="utf-8")).splitlines():
        m = HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(page):
    bad = []
    for target in link_targets(page.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ... are not checked here
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif ROOT not in (dest, *dest.parents):
            bad.append(f"{target}: outside the repository")
        elif anchor and dest.suffix == ".md" and anchor.lower() not in anchors(dest):
            bad.append(f"{target}: no heading in {dest.relative_to(ROOT)} gives #{anchor}")
    return bad


def test_readme_is_a_front_page():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, (
        f"README.md is {size:,} bytes, over {README_MAX_BYTES:,}: move logs and measurements into docs/ or results/")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert not broken_links(page), f"{page.relative_to(ROOT)}: " + "; ".join(broken_links(page))


def unlinked_spec_citations(text):
    """Each "spec §N" that is not the text of a link to UPSTREAM.md."""
    body = prose(text)
    linked = [m.span() for m in LINK.finditer(body) if UPSTREAM_TARGET.match(m.group(1))]
    return [" ".join(body[max(0, m.start() - 60):m.end() + 10].split())
            for m in SPEC.finditer(body) if not any(a <= m.start() < b for a, b in linked)]


@pytest.mark.parametrize("page", [p for p in PAGES if p.name != "UPSTREAM.md"], ids=lambda p: str(p.relative_to(ROOT)))
def test_spec_sections_link_to_the_copy_in_docs(page):
    """"spec §N" is the upstream behaviour; its copy is docs/UPSTREAM.md, so each citation is a link there, e.g.
    [spec §1.2](docs/UPSTREAM.md#...). UPSTREAM.md itself is the target."""
    bad = unlinked_spec_citations(page.read_text(encoding="utf-8"))
    assert not bad, f"{page.relative_to(ROOT)}: make these links to UPSTREAM.md: " + " | ".join(bad)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_paper_results_is_named_by_a_path_that_exists(page):
    """The paper's numbers are docs/PAPER_RESULTS.md: a mention must name it by a path that resolves from the page."""
    body = page.read_text(encoding="utf-8")
    bad = [m.group(0) for m in re.finditer(r"[\w./-]*PAPER_RESULTS\.md", body)
           if not (page.parent / m.group(0)).exists() and not (ROOT / m.group(0)).exists()]
    assert not bad, f"{page.relative_to(ROOT)}: {bad} do not resolve; write docs/PAPER_RESULTS.md"


def test_the_checks_catch_what_they_are_for(tmp_path):
    """The checkers themselves: a dead file, a dead anchor and an unlinked spec citation are each found."""
    (tmp_path / "a.md").write_text("# Two words, `code`!\n## Two words, code\n```\n# not a heading\n```\n")
    assert anchors(tmp_path / "a.md") == {"two-words-code", "two-words-code-1"}
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#two-words-code) [gone](c.md) [bad](a.md#not-a-heading) `[code](x.md)`\n"
                    "```\n[fenced](y.md)\n```\n[web](https://example.org/z.md)\n")
    global ROOT
    root, ROOT = ROOT, tmp_path
    try:
        assert [b.split(":")[0] for b in broken_links(page)] == ["c.md", "a.md#not-a-heading"]
    finally:
        ROOT = root
    assert SPEC.search("as upstream (spec\n§1.2)") and not SPEC.search("BINLLM_SPEC §2.6 is not this form")
    assert not unlinked_spec_citations("[spec §1.2](docs/UPSTREAM.md#x), [spec §1.3](UPSTREAM.md)")
    assert unlinked_spec_citations("see [spec §1.2](docs/OTHER.md) and spec §1.3, [UPSTREAM](docs/UPSTREAM.md)")


def test_bare_make_lists_the_targets_without_installing():
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dry = subprocess.run(["make", "-n"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "pip" not in dry and "venv" not in dry, dry
    shown = subprocess.run(["make"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for target in ("demo", "test", "test-fast", "reproduce", "ml-100k", "bench", "install"):
        assert f"`make {target}`" in shown, (target, shown)
