"""Run every Python example of the documentation, so the docs cannot rot.

Every ```` ```python ```` block of ``README.md`` and ``docs/*.md`` is one test, named
``file:line`` (the line of its opening fence):

- a block with ``>>>`` prompts is run as a doctest; a traceback example must show the
  exception's class *and* message (``...`` may stand for any part of them);
- a block whose first line is ``# test_NAME.py`` is a complete pytest file: it is run
  with pytest in a subprocess, against the ``wan_server`` fixture of the plugin;
- a program (it calls ``asyncio.run(...)`` at top level, or uses the blocking
  ``wan.WanClient``, which must not run on the fragments' event loop beside their
  emulator) must compile as a script and is run in a subprocess, with
  ``WAN_API_KEY``/``WAN_BASE_URL`` set to an emulator;
- any other block is a fragment: it is compiled with top-level ``await`` allowed and
  run in an event loop, in a fresh namespace holding a small prelude (``wan``, a
  ``client``, a ``request``, ``requests``, a created ``task`` and its ``task_id``, the
  emulator as ``server``, ...; see ``_prelude``), against an emulator of its own.

An example that raises fails its test. A block that cannot run here is skipped only
when the page says so, with a reason, on the line before its fence:
``<!-- docs-test: skip (needs a public callback URL) -->``. It is still compiled.
"""

from __future__ import annotations

import ast
import asyncio
import concurrent.futures
import doctest
import inspect
import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import wan26_async as wan
from wan26_async.testing import FakeWanServer, Fault, Faults, FixedWindow, TokenBucket

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: Seconds one example may take (the whole file runs in a few seconds).
EXAMPLE_TIMEOUT = 15.0
#: Fast emulator: a 720p 2 s task is done in about 0.05 s. Credits do not run out.
SERVER_OPTIONS: dict[str, Any] = {"time_scale": 0.01, "pending_seconds": 0.05,
                                  "credits": 10**9}
DOCTEST_FLAGS = doctest.ELLIPSIS

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"<!--\s*docs-test:(?P<body>.*?)-->")
_SKIP = re.compile(r"^\s*skip\s*\((?P<reason>[^()]*\S[^()]*)\)\s*$")
_PYTEST_FILE = re.compile(r"^#\s*(test_\w+\.py)\s*$")
_PROGRAM = re.compile(r"^asyncio\.run\(|\bwan\.WanClient\(", re.MULTILINE)


@dataclass(frozen=True)
class Example:
    path: Path
    line: int  # 1-based line of the opening fence
    source: str  # dedented to the fence's indentation
    skip: str | None  # the reason given by a skip marker

    @property
    def label(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"

    @property
    def kind(self) -> str:
        if any(line.lstrip().startswith(">>>") for line in self.source.splitlines()):
            return "doctest"
        if _PYTEST_FILE.match(self.source.splitlines()[0]):
            return "pytest"
        if _PROGRAM.search(self.source):
            return "program"
        return "fragment"


def _blocks(path: Path) -> Iterator[tuple[int, str, str, str | None]]:
    """Yield (fence line, info string, dedented body, marker) for every fenced block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence = match["indent"], match["fence"]
        end = i + 1
        while end < len(lines) and not re.fullmatch(
            rf"[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*", lines[end]
        ):
            end += 1
        body = [line[len(indent):] if line.startswith(indent) else line.lstrip()
                for line in lines[i + 1:end]]
        previous = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        marker = _MARKER.search(previous)
        yield i + 1, match["info"].strip(), "\n".join(body) + "\n", (
            marker["body"] if marker else None)
        i = end + 1


def _collect() -> list[Example]:
    examples = []
    for path in DOC_FILES:
        for line, info, body, marker in _blocks(path):
            if info.split()[:1] != ["python"]:
                continue
            skip = None
            if marker is not None:
                skip_match = _SKIP.match(marker)
                if not skip_match:
                    raise ValueError(f"{path}:{line}: unknown docs-test marker {marker!r}; "
                                     "write <!-- docs-test: skip (reason) -->")
                skip = skip_match["reason"].strip()
            examples.append(Example(path, line, body, skip))
    return examples


EXAMPLES = _collect()


def test_examples_are_found_and_skips_are_few() -> None:
    kinds = {kind: sum(e.kind == kind for e in EXAMPLES)
             for kind in ("doctest", "pytest", "program", "fragment")}
    assert sum(kinds.values()) >= 40, kinds
    assert all(kinds.values()), kinds
    assert sum(e.skip is not None for e in EXAMPLES) <= 3


def test_every_marker_is_on_a_python_block() -> None:
    """A marker left anywhere but right above a Python block would silently do nothing."""
    for path in DOC_FILES:
        markers = len(_MARKER.findall(path.read_text(encoding="utf-8")))
        used = sum(e.path == path and e.skip is not None for e in EXAMPLES)
        assert markers == used, f"{path.name}: {markers - used} marker(s) not on a Python block"


# -- the emulator the programs talk to ---------------------------------------------------


@pytest.fixture(scope="module")
def docs_server() -> Iterator[FakeWanServer]:
    with FakeWanServer(**SERVER_OPTIONS).run_in_thread() as server:
        yield server


def _env(server: FakeWanServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(WAN_API_KEY=server.api_key, WAN_BASE_URL=server.base_url)
    return env


# -- running one example -----------------------------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.label for e in EXAMPLES])
def test_example(example: Example, request: pytest.FixtureRequest, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> None:
    if example.kind != "doctest":
        _compile(example)  # a skipped block is still checked for syntax
    if example.skip is not None:
        pytest.skip(f"{example.label}: {example.skip}")
    if example.kind == "doctest":
        _run_doctest(example)
    elif example.kind == "pytest":
        _run_pytest_file(example, tmp_path)
    elif example.kind == "program":
        _run_program(example, request.getfixturevalue("docs_server"), tmp_path)
    else:
        monkeypatch.chdir(tmp_path)  # an example writing a file writes it here
        asyncio.run(_run_fragment(example, monkeypatch))


def _compile(example: Example) -> Any:
    # A program or a pytest file must be valid as a file; a fragment may await at top level.
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT if example.kind == "fragment" else 0
    try:
        return compile(example.source, example.label, "exec", flags=flags, dont_inherit=True)
    except SyntaxError as err:
        pytest.fail(f"{example.label}: the example does not compile: {err}", pytrace=False)


def _run_doctest(example: Example) -> None:
    test = doctest.DocTestParser().get_doctest(
        example.source, {"wan": wan}, example.label, str(example.path), example.line
    )
    runner = doctest.DocTestRunner(optionflags=DOCTEST_FLAGS, verbose=False)
    report: list[str] = []
    runner.run(test, out=report.append)
    if runner.failures:
        pytest.fail("".join(report), pytrace=False)


def _run_subprocess(example: Example, args: list[str], env: dict[str, str],
                    cwd: Path) -> None:
    try:
        done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=EXAMPLE_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{example.label}: did not finish within {EXAMPLE_TIMEOUT} s\n"
                    f"{err.stdout or ''}{err.stderr or ''}", pytrace=False)
    if done.returncode != 0:
        pytest.fail(f"{example.label}: exit status {done.returncode}\n--- stdout\n"
                    f"{done.stdout}--- stderr\n{done.stderr}", pytrace=False)


def _run_program(example: Example, server: FakeWanServer, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(example.source, encoding="utf-8")
    _run_subprocess(example, [sys.executable, str(script)], _env(server), tmp_path)


def _run_pytest_file(example: Example, tmp_path: Path) -> None:
    match = _PYTEST_FILE.match(example.source.splitlines()[0])
    assert match
    (tmp_path / match[1]).write_text(example.source, encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # not ours
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    _run_subprocess(example, [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              match[1]], env, tmp_path)


# -- fragments -----------------------------------------------------------------------------


def client_code(*, base_url: str, api_key: str) -> None:
    """Stands for "your code" in the emulator's thread-mode example: one create, made
    from synchronous code through an event loop of its own."""

    async def create() -> None:
        async with wan.AsyncWanClient(api_key=api_key, base_url=base_url) as client:
            await client.create_task(wan.TextToVideo(prompt="client code", duration=2))

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, create()).result(timeout=EXAMPLE_TIMEOUT)


async def _prelude(server: FakeWanServer) -> dict[str, Any]:
    """The names a fragment may use without defining them."""
    client = wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url)
    request = wan.TextToVideo(prompt="docs example", resolution="720p", duration=2)
    task = await client.create_task(request)
    return {
        "__name__": "__docs_example__",
        "asyncio": asyncio,
        "pytest": pytest,
        "wan": wan,
        "FakeWanServer": FakeWanServer,
        "Fault": Fault,
        "Faults": Faults,
        "FixedWindow": FixedWindow,
        "TokenBucket": TokenBucket,
        "server": server,
        "client": client,
        "request": request,
        "requests": [
            request,
            wan.ImageToVideo(prompt="docs example", image_urls=["https://example.com/a.png"],
                             resolution="720p", duration=2),
            wan.ReferenceToVideo(prompt="character1 waves", resolution="720p", duration=2,
                                 image_urls=["https://example.com/character1.png"]),
        ],
        "task": task,
        "task_id": task.id,
        "client_code": client_code,
    }


def _lost_create_reply(server: FakeWanServer) -> Callable[[], None]:
    """Make the recovery branch run: the next create is made, but its reply is lost."""
    server.inject("create", Fault.drop_after())

    def check() -> None:
        assert server.stats.creates_replayed == 1, "the ambiguous create was not resent"

    return check


#: Per-example setup, chosen by a piece of the example's text; returns a final check.
SETUPS: dict[str, Callable[[FakeWanServer], Callable[[], None]]] = {
    "except wan.AmbiguousSubmissionError": _lost_create_reply,
}
#: Emulator options for some examples, chosen the same way. 500 generations at 32 at a
#: time would take seconds of polling: their tasks end at once instead (the flow of
#: create, poll and outcome is the same).
SERVER_OVERRIDES: dict[str, dict[str, Any]] = {
    "range(500)": {"time_scale": 0.0},
}


async def _run_fragment(example: Example, monkeypatch: pytest.MonkeyPatch) -> None:
    code = _compile(example)
    root = logging.getLogger()
    saved_logging = root.level, list(root.handlers)
    options = dict(SERVER_OPTIONS)
    for text, override in SERVER_OVERRIDES.items():
        if text in example.source:
            options.update(override)
    async with FakeWanServer(**options) as server:
        monkeypatch.setenv("WAN_API_KEY", server.api_key)
        monkeypatch.setenv("WAN_BASE_URL", server.base_url)
        namespace = await _prelude(server)
        clients = [namespace["client"]]
        checks = [setup(server) for text, setup in SETUPS.items() if text in example.source]
        try:
            if code.co_flags & inspect.CO_COROUTINE:
                await asyncio.wait_for(eval(code, namespace), EXAMPLE_TIMEOUT)
            else:
                exec(code, namespace)
        finally:
            root.setLevel(saved_logging[0])
            root.handlers[:] = saved_logging[1]
            clients += [v for v in namespace.values() if isinstance(v, wan.AsyncWanClient)]
            for client in clients:
                await client.aclose()
        for check in checks:
            check()
        # An example whose outcomes print their errors instead of raising them must not
        # hide a refused create or a failed task either (unless it asks for one).
        assert server.stats.creates_refused == 0, "the emulator refused a create"
        if "[fail]" not in example.source:
            failed = [t.id for t in server.tasks.values() if t.will_fail]
            assert not failed, f"tasks failed: {failed}"
