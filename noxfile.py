"""The single entry point for tests, lint, type checks, docs and benchmarks: ``nox -s NAME``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (pass pytest arguments after --)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def chaos(session: nox.Session) -> None:
    """The full chaos suite: 500 generations with every fault on (seed: WAN_CHAOS_SEED)."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/chaos", "-m", "chaos", *session.posargs,
                env={"WAN_CHAOS_FULL": "1"})


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint every Python file of the repository."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[redis,cli,otel]", "mypy>=1.10", "pytest>=8")
    session.run("mypy", "--strict", "wan26_async")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site in strict mode (broken references fail), then test the
    API reference it built."""
    session.install("-e", ".[docs]", "pytest>=8", "pytest-asyncio>=0.23", "aioresponses>=0.7.6")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")
    # the reference's own tests, which need the docs extra (skipped in the tests session)
    session.run("pytest", "-q", "-p", "no:cacheprovider", "tests/test_reference_docs.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Run benchmarks (default: every single-process one; or one command given after --)."""
    session.install("-e", ".[bench]")
    runs = [session.posargs] if session.posargs else [
        ["benchmarks/throughput.py"], ["benchmarks/rate_limit.py"],
        ["benchmarks/watch_scale.py"], ["benchmarks/watch_scale.py", "--server", "fast"],
        ["benchmarks/end_to_end.py"]]
    for run in runs:
        session.run("python", *run)
