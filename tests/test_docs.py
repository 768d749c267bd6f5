"""What a user pastes from the docs works: command lines, flags, attributes, installs, links.

Every ``pl_submit`` command line in README.md and docs/ passes pl_submit's own flag check; every
``ctx.X``, ``result.X`` and ``elearn.X`` the docs name exists; api.md documents everything
``elearn`` exports and everything ``ctx`` offers; nothing installs elearn from a package index
(it is not published); every page is linked from docs/README.md; Python blocks parse; and fenced
blocks marked ``<!-- runnable -->`` on the line before them are run, in a scratch directory.
None of this starts Spark.
"""
import dataclasses
import glob
import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import ROOT

import elearn
from elearn.submit import SubmitResult
from elearn.train.context import TrainContext
from plsubmit.cli import UsageError, check_argv, normalize

PAGES = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))) + [os.path.join(ROOT, "README.md")]


def _text(path: str) -> str:
    with open(path) as f:
        return f.read()


def _blocks(path: str):
    """``(language, code, runnable)`` of every fenced block of a page."""
    text = _text(path)
    for m in re.finditer(r"^```(\w*)[^\n]*\n(.*?)^```", text, re.M | re.S):
        before = text[:m.start()].rstrip().rsplit("\n", 1)[-1]
        yield m.group(1), m.group(2), before.strip() == "<!-- runnable -->"


def _commands(path: str):
    """Every pl_submit command line of a page: in fenced blocks and indented (4-space) blocks,
    continuation lines joined; error output quoted in the docs (``pl_submit: ...``) is not one."""
    text = _text(path).replace("\\\n", " ")
    for line in text.splitlines():
        line = re.sub(r"\s#.*$|\s{2,}\(.*\)$", "", line.strip())  # a comment or a remark after it
        for part in re.split(r"&&|;", line):
            part = part.strip()
            # A command runs a job file or a subcommand ("pl_submit / a notebook" in a diagram does not).
            if re.match(r"pl_submit (\S+\.py|list|status|kill|help|-)", part):
                yield part


def _flag_check(command: str) -> None:
    argv = shlex.split(re.sub(r"\$\([^)]*\)", "X", command))[1:]
    if argv and argv[0] in ("list", "status", "kill", "--help", "-h", "--version", "help"):
        return
    check_argv(normalize(argv))


@pytest.mark.parametrize("path", PAGES, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_command_line_passes_pl_submits_flag_check(path):
    commands = list(_commands(path))
    bad = []
    for command in commands:
        try:
            _flag_check(command)
        except UsageError as exc:
            bad.append(f"{command}\n    -> {exc}")
    assert not bad, "\n".join(bad)


# Flags of other tools the docs quote (docker, pip, venv, spark-submit, hadoop, unshare, nsenter,
# tests/simcluster.py's command line): anything else spelled --like-this must be pl_submit's.
OTHER_TOOLS = {"--build-arg", "--class", "--cores", "--fork", "--glob", "--host", "--hosts", "--memory",
               "--mount", "--net", "--no-build-isolation", "--no-deps", "--no-spark", "--propagation",
               "--shared", "--system-site-packages", "--target", "--uts", "--wd"}


def test_every_flag_the_docs_name_exists():
    from plsubmit.cli import ALIASES, _flags
    from plsubmit.control import METAVARS

    known = set(_flags()) | set(ALIASES) | set(METAVARS) | {"--help", "--version"} | OTHER_TOOLS
    unknown = sorted({f"{os.path.relpath(path, ROOT)}: {token}" for path in PAGES
                      for token in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", _text(path))
                      if token not in known})
    assert not unknown, f"not flags of pl_submit (pl_submit --help lists them): {unknown}"


def test_the_docs_name_only_attributes_that_exist():
    ctx_names = {n for n in dir(TrainContext) if not n.startswith("_")}
    ctx_names |= {f.name for f in dataclasses.fields(TrainContext) if not f.name.startswith("_")}
    result_names = {f.name for f in dataclasses.fields(SubmitResult)} | {"ok"}
    missing = []
    for path in PAGES:
        text = _text(path)
        for name in set(re.findall(r"\bctx\.([A-Za-z_]\w*)", text)):
            if name not in ctx_names:
                missing.append(f"{os.path.basename(path)}: ctx.{name}")
        for name in set(re.findall(r"\bresult\.([A-Za-z_]\w*)", text)):
            if name not in result_names:
                missing.append(f"{os.path.basename(path)}: result.{name}")
        for name in set(re.findall(r"\belearn\.([A-Za-z_]\w*)\b(?![./])", text)):
            if name not in elearn.__all__ and not os.path.isdir(os.path.join(ROOT, "elearn", name)) \
                    and not os.path.isfile(os.path.join(ROOT, "elearn", name + ".py")):
                missing.append(f"{os.path.basename(path)}: elearn.{name}")
    assert not missing, missing


def test_api_md_documents_every_export_and_everything_ctx_offers():
    api = _text(os.path.join(ROOT, "docs", "api.md"))
    undocumented = [n for n in elearn.__all__ if f"`{n}" not in api and f"{n}`" not in api]
    assert not undocumented, f"exported by elearn, not in docs/api.md: {undocumented}"
    ctx_table = api.split("## `TrainContext` (`ctx`)", 1)[1].split("\n## ", 1)[0]
    offered = {n for n in dir(TrainContext) if not n.startswith("_")}
    offered |= {f.name for f in dataclasses.fields(TrainContext) if not f.name.startswith("_")}
    absent = sorted(n for n in offered if not re.search(rf"`{n}\b", ctx_table))
    assert not absent, f"ctx offers these, docs/api.md's ctx table lacks them: {absent}"
    params = [p for p in __import__("inspect").signature(TrainContext.dataset).parameters if p != "self"]
    row = next(line for line in ctx_table.splitlines() if line.startswith("| `dataset("))
    assert all(f"{p}=" in row or p == "name" for p in params), (params, row)
    fields = [f.name for f in dataclasses.fields(SubmitResult)] + ["ok"]
    assert all(f"`{f}`" in api for f in fields), fields


def test_nothing_installs_elearn_from_a_package_index():
    """elearn is not published: `pip install elearn` would install someone else's package."""
    found = []
    for path in PAGES + glob.glob(os.path.join(ROOT, "envs", "*")):
        for line in _text(path).splitlines():
            m = re.search(r"pip install ([^`|#]*)", line)
            if m and re.search(r"(^|\s)['\"]?elearn(\[[^\]]*\])?['\"]?(\s|$)", m.group(1)):
                found.append(f"{os.path.relpath(path, ROOT)}: {line.strip()}")
    assert not found, found


def test_every_page_is_linked_from_the_index_and_every_link_resolves():
    index = _text(os.path.join(ROOT, "docs", "README.md"))
    pages = {os.path.basename(p) for p in PAGES if "docs" in p} - {"README.md"}
    assert not {p for p in pages if f"({p})" not in index}, "pages docs/README.md does not link"
    broken = []
    for path in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", _text(path)):
            if not os.path.isfile(os.path.join(os.path.dirname(path), target)):
                broken.append(f"{os.path.relpath(path, ROOT)} -> {target}")
    assert not broken, broken


def test_python_blocks_parse():
    for path in PAGES:
        for lang, code, _ in _blocks(path):
            if lang == "python":
                compile(code, f"{os.path.relpath(path, ROOT)} block", "exec")


def _runnable():
    return [pytest.param(lang, code, id=f"{os.path.basename(path)}-{i}")
            for path in PAGES for i, (lang, code, runnable) in enumerate(_blocks(path)) if runnable]


@pytest.mark.parametrize("lang, code", _runnable())
def test_runnable_blocks_run(tmp_path, lang, code):
    if lang == "python":
        cmd = [sys.executable, "-c", code]
    elif lang in ("bash", "sh", "console"):
        cmd = ["bash", "-euo", "pipefail", "-c", code]
    else:
        pytest.fail(f"a runnable block must be python or bash, not {lang!r}")
    env = {**os.environ, "ELEARN_HOME": str(tmp_path / "home"), "ELEARN_REPO": ROOT,
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def test_readme_python_version_matches_requires_python():
    import tomllib

    from packaging.specifiers import SpecifierSet

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        requires = SpecifierSet(tomllib.load(f)["project"]["requires-python"])
    readme = _text(os.path.join(ROOT, "README.md"))
    named = re.findall(r"Python (3\.\d+)", readme)
    assert named, "README.md names no Python version"
    assert all(requires.contains(v + ".0") for v in named), (named, str(requires))
    lowest = min(named, key=lambda v: int(v.split(".")[1]))
    assert not requires.contains(f"3.{int(lowest.split('.')[1]) - 1}.99"), (
        f"README.md says Python {lowest} while pyproject accepts older: {requires}")
