"""The documented figures name scripts that really print them; links resolve; the README stays short.

docs/results.md and docs/benchmarks.md give every figure a source in a fixed form: a script
in backticks followed, on the same line, by the ``RESULT <name>`` lines it stands for
(`` `bench/steer_offline_world.py` `RESULT lift_danger` ``), or by ``prints "<text>"`` for a
figure a module prints without a RESULT line, or the words "one-off run" for an exploratory
run no script repeats. Running the benches is far too slow for a test, so this reads each
script's code: a string literal ``"RESULT name ..."`` prints ``name``, and an f-string
``f"RESULT lift_{c} ..."`` prints ``lift_<any word>`` (so it cannot tell ``lift_low_danger``
from ``lift_{c}`` with c = "low_danger"). Docstrings and comments do not count: a script that
only *mentions* a RESULT line in its docstring does not print it.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import sae_steer

ROOT = Path(__file__).resolve().parent.parent
FIGURE_DOCS = ("docs/results.md", "docs/benchmarks.md")
LINKED_DOCS = ("README.md", *FIGURE_DOCS)
README_MAX_LINES = 220  # a front page; the figures live in FIGURE_DOCS

_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_SCRIPT = re.compile(r"(?:bench|notebooks|sae_steer|tests)/[\w./-]+\.(?:py|ipynb)")
_RESULT = re.compile(r"RESULT (\w+)")
_PRINTS = re.compile(r'prints "([^"<>]+)"')
_HOLE = "\x00"  # stands for an f-string's {...} while a template is matched
_PRINTED = re.compile(rf"RESULT ([\w{_HOLE}]+)")


@dataclass(frozen=True)
class SourceRef:
    line: int
    script: str
    kind: str  # "RESULT" (a RESULT line's name) or "prints" (text in the script's code)
    name: str


# ---- reading the docs --------------------------------------------------------------------
def source_refs(text: str) -> tuple[list[SourceRef], list[str]]:
    """Every `RESULT name` / `prints "text"` span with the script named before it on its line.

    A span with no script before it on its line is returned as a problem: its figure would
    name a RESULT line without saying which script prints it.
    """
    refs, problems = [], []
    for n, line in enumerate(text.splitlines(), 1):
        script = None
        for span in _CODE_SPAN.findall(line):
            if _SCRIPT.fullmatch(span):
                script = span
                continue
            for kind, pattern in (("RESULT", _RESULT), ("prints", _PRINTS)):
                m = pattern.fullmatch(span)
                if m and script is None:
                    problems.append(f"line {n}: `{span}` names no script before it on its line")
                elif m:
                    refs.append(SourceRef(n, script, kind, m.group(1)))
    return refs, problems


def _tables(text: str) -> list[tuple[int, list[list[str]]]]:
    """Markdown tables as (first line number, rows of cells), separator row dropped."""
    tables, rows, start = [], [], 0
    for n, line in enumerate(text.splitlines() + [""], 1):
        if line.lstrip().startswith("|"):
            start = start or n
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                rows.append(cells)
        elif rows:
            tables.append((start, rows))
            rows, start = [], 0
    return tables


def table_problems(text: str) -> list[str]:
    """Every table ends in a "source" column, and every row's source is checkable or a one-off run."""
    problems = []
    for start, (header, *body) in _tables(text):
        if header[-1].lower() != "source":
            problems.append(f"table at line {start}: its last column is {header[-1]!r}, not 'source'")
            continue
        for row in body:
            cell = row[-1]
            if not (source_refs(cell)[0] or cell.startswith("one-off run")):
                problems.append(f"table at line {start}, row {row[0]!r}: no source in {cell!r}")
    return problems


# ---- reading the scripts -----------------------------------------------------------------
def _code(path: Path) -> str:
    if path.suffix != ".ipynb":
        return path.read_text()
    cells = json.loads(path.read_text())["cells"]
    lines = [line for c in cells if c["cell_type"] == "code" for line in "".join(c["source"]).splitlines()]
    return "\n".join(line for line in lines if not line.lstrip().startswith(("%", "!")))


def code_strings(source: str) -> list[str]:
    """The string literals of some Python code, docstrings left out; f-strings with holes."""
    tree = ast.parse(source)
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                skip.add(id(first.value))
        if isinstance(node, ast.JoinedStr):
            skip.update(id(v) for v in node.values)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            out.append("".join(v.value if isinstance(v, ast.Constant) else _HOLE for v in node.values))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            out.append(re.sub(r"\{[^{}]*\}", _HOLE, node.value))  # "RESULT {}".format(...) too
    return out


def printed_result_patterns(strings: list[str]) -> list[re.Pattern]:
    """One regex per RESULT name template in the strings: lift_{c} -> lift_\\w+."""
    templates = {m.group(1) for s in strings for m in _PRINTED.finditer(s)}
    return [re.compile(r"\w+".join(re.escape(part) for part in t.split(_HOLE))) for t in sorted(templates)]


def reference_problems(text: str, root: Path) -> list[str]:
    """Each named script exists and its code prints each RESULT name (or text) named with it."""
    refs, problems = source_refs(text)
    strings: dict[str, list[str]] = {}
    for ref in refs:
        path = root / ref.script
        if not path.is_file():
            problems.append(f"line {ref.line}: {ref.script} does not exist")
            continue
        if ref.script not in strings:
            strings[ref.script] = code_strings(_code(path))
        if ref.kind == "RESULT":
            ok = any(p.fullmatch(ref.name) for p in printed_result_patterns(strings[ref.script]))
        else:
            ok = any(ref.name in s for s in strings[ref.script])
        if not ok:
            problems.append(f"line {ref.line}: {ref.script} does not print {ref.kind} {ref.name!r}")
    return problems


# ---- links ---------------------------------------------------------------------------------
def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().replace("`", "").lower()).replace(" ", "-")


def link_problems(doc: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve()
        if not file.exists():
            problems.append(f"{doc.name}: link to {target} points to no file")
        elif anchor and file.suffix == ".md":
            headings = {_slug(h) for h in re.findall(r"^#+ (.+)$", file.read_text(), flags=re.M)}
            if anchor not in headings:
                problems.append(f"{doc.name}: link to {target}: no such heading")
    return problems


# ---- the real docs -------------------------------------------------------------------------
@pytest.mark.parametrize("doc", FIGURE_DOCS)
def test_every_named_result_is_printed_by_its_script(doc):
    text = (ROOT / doc).read_text()
    assert source_refs(text)[0], f"{doc} names no sources"
    assert reference_problems(text, ROOT) == []


@pytest.mark.parametrize("doc", FIGURE_DOCS)
def test_every_table_row_names_its_source(doc):
    assert table_problems((ROOT / doc).read_text()) == []


def test_every_bench_script_has_documented_figures():
    named = {ref.script for doc in FIGURE_DOCS for ref in source_refs((ROOT / doc).read_text())[0]}
    benches = {p.relative_to(ROOT).as_posix() for p in (ROOT / "bench").glob("*.py")}
    assert benches - named == set()


def test_readme_is_a_front_page():
    n_lines = len((ROOT / "README.md").read_text().splitlines())
    assert n_lines <= README_MAX_LINES, f"README.md has {n_lines} lines; move figures to docs/"


@pytest.mark.parametrize("doc", LINKED_DOCS)
def test_relative_links_resolve(doc):
    assert link_problems(ROOT / doc) == []


def test_readme_imports_only_public_names():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"from sae_steer import \(([^)]*)\)", text)
    names = {n.strip() for block in blocks for n in block.split(",") if n.strip()}
    assert names, "the README's tour imports nothing from sae_steer"
    assert names - set(sae_steer.__all__) == set()
    for module, name in re.findall(r"from sae_steer\.([\w.]+) import (\w+)", text):
        path = ROOT / "sae_steer" / module.replace(".", "/")
        source = (path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).read_text()
        assert re.search(rf"\b{name}\b", source), f"sae_steer.{module} has no {name}"


# ---- the checker itself, on a fake script and fake docs -------------------------------------
FAKE_SCRIPT = '''"""Ends with RESULT ghost (named in this docstring only)."""
for c in ("danger", "quote"):
    print(f"RESULT lift_{c} {1.0:.3f}")
print("RESULT targets_met", 2)
print("built world in", 3, "s")
# RESULT commented_out 1
'''


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "fake.py").write_text(FAKE_SCRIPT)
    return tmp_path


def test_checker_accepts_what_the_script_prints(fake_root):
    doc = ("| concept | lift | source |\n|---|---|---|\n"
           "| danger | 14.4× | `bench/fake.py` `RESULT lift_danger` `RESULT targets_met` |\n"
           "| quote | 10.3× | `bench/fake.py` `RESULT lift_quote` `prints \"built world\"` |\n")
    assert reference_problems(doc, fake_root) == []
    assert table_problems(doc) == []


@pytest.mark.parametrize("name", ["ghost", "commented_out", "lift_", "danger_lift", "targets"])
def test_checker_rejects_a_result_the_script_does_not_print(fake_root, name):
    doc = f"| concept | lift | source |\n|---|---|---|\n| danger | 14.4× | `bench/fake.py` `RESULT {name}` |\n"
    problems = reference_problems(doc, fake_root)
    assert len(problems) == 1 and f"does not print RESULT '{name}'" in problems[0]


def test_checker_rejects_a_missing_script_and_unprinted_text(fake_root):
    doc = "`bench/missing.py` `RESULT lift_danger`\n`bench/fake.py` `prints \"nowhere\"`\n"
    problems = reference_problems(doc, fake_root)
    assert len(problems) == 2
    assert "bench/missing.py does not exist" in problems[0]
    assert "does not print prints 'nowhere'" in problems[1]


def test_checker_rejects_a_result_without_its_script(fake_root):
    problems = reference_problems("lift 14.4× (`RESULT lift_danger`)\n", fake_root)
    assert problems == ["line 1: `RESULT lift_danger` names no script before it on its line"]


def test_checker_rejects_a_table_without_sources():
    no_column = "| concept | lift |\n|---|---|\n| danger | 14.4× |\n"
    empty_cell = "| concept | lift | source |\n|---|---|---|\n| danger | 14.4× | |\n| quote | 2× | one-off run |\n"
    assert table_problems(no_column) == ["table at line 1: its last column is 'lift', not 'source'"]
    assert table_problems(empty_cell) == ["table at line 1, row 'danger': no source in ''"]


def test_link_checker_finds_a_broken_link(tmp_path):
    (tmp_path / "there.md").write_text("# A heading\n")
    doc = tmp_path / "doc.md"
    doc.write_text("[ok](there.md) [ok](there.md#a-heading) [web](https://example.org) `[code](nope.md)`\n"
                   "[broken](nope.md) [bad anchor](there.md#nope)\n")
    assert link_problems(doc) == ["doc.md: link to nope.md points to no file",
                                  "doc.md: link to there.md#nope: no such heading"]
