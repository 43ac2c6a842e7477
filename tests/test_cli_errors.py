"""What a person at a shell sees when something goes wrong, and the exit status.

Each test runs the real ``wan26`` command in a subprocess against the emulator.
"""

from __future__ import annotations

import argparse
import json
import os
import pty
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from wan26_async.cli import _parser
from wan26_async.testing import FakeWanServer
from wan26_async.testing._cli import add_arguments

WAN26 = [sys.executable, "-m", "wan26_async.cli"]
T2V = '{{"model": "{model}", "input": {{"prompt": "{prompt}", "duration": 2, ' \
      '"resolution": "720p"}}}}'
#: Nothing listens on the discard port of loopback.
NOWHERE = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def emulator() -> Iterator[FakeWanServer]:
    with FakeWanServer(time_scale=0.01, pending_seconds=0.05).run_in_thread() as server:
        yield server


def run(server: FakeWanServer | None, *args: str, timeout: float = 60,
        env: dict[str, str] | None = None, **kw: object) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WAN_")}
    if server is not None:
        clean.update(WAN_API_KEY=server.api_key, WAN_BASE_URL=server.base_url)
    clean.update(env or {})
    return subprocess.run([*WAN26, *args], env=clean, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]


def jobs_file(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def line(model: str = "wan-2.6-text-to-video", prompt: str = "p") -> str:
    return T2V.format(model=model, prompt=prompt)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The stderr of a failed command is one ``error:`` line (details indented)."""
    assert "Traceback" not in done.stderr, done.stderr
    errors = [text for text in done.stderr.splitlines() if text.startswith("error")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def json_error(done: subprocess.CompletedProcess[str]) -> dict[str, object]:
    """With --json, stderr ends with one JSON object {"error": {...}}."""
    assert "Traceback" not in done.stderr, done.stderr
    body = json.loads(done.stderr.strip().splitlines()[-1])
    error = body["error"]
    assert set(error) >= {"type", "code", "message", "request_id"}
    assert error["exit_code"] == done.returncode
    return dict(error)


# -- 1, 2: batch input, models, exit codes ---------------------------------------------

def test_batch_refuses_an_unknown_key_naming_line_key_and_nearest_field(
    emulator: FakeWanServer, tmp_path: Path
) -> None:
    jobs = jobs_file(tmp_path / "jobs.jsonl", line(), '{"model": "wan-2.6-text-to-video", '
                     '"input": {"prompt": "typo", "durations": 2, "resolution": "720p"}}')
    before = emulator.stats.creates_accepted
    done = run(emulator, "batch", str(jobs), "--out", str(tmp_path / "r.jsonl"))
    assert done.returncode == 2
    assert "nothing was submitted" in one_error_line(done)
    assert "line 2: input['durations']" in done.stderr
    assert "did you mean 'duration'?" in done.stderr
    assert emulator.stats.creates_accepted == before  # nothing sent, nothing billed


def test_batch_takes_short_model_names_and_exits_0_when_all_completed(
    emulator: FakeWanServer, tmp_path: Path
) -> None:
    jobs = jobs_file(tmp_path / "jobs.jsonl", line("t2v"), '{"model": "i2v", "input": '
                     '{"prompt": "p", "image_urls": ["https://example.com/a.png"], '
                     '"duration": 2, "resolution": "720p"}}')
    out = tmp_path / "r.jsonl"
    done = run(emulator, "batch", str(jobs), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "warning" not in done.stderr
    records = [json.loads(text) for text in out.read_text().splitlines()]
    assert [r["status"] for r in records] == ["completed", "completed"]


@pytest.mark.parametrize("json_mode", [False, True])
def test_batch_warns_about_an_unknown_model_first_and_exits_1_when_a_job_failed(
    emulator: FakeWanServer, tmp_path: Path, json_mode: bool
) -> None:
    jobs = jobs_file(tmp_path / "jobs.jsonl", line("t2v"), line("foo"))
    out = tmp_path / "r.jsonl"
    done = run(emulator, *(["--json"] if json_mode else []), "batch", str(jobs),
               "--out", str(out))
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    if json_mode:
        events = [json.loads(text) for text in lines]
        assert events[0]["event"] == "warning" and events[0]["model"] == "foo"
        assert events[0]["lines"] == [2]
        summary = events[-1]
        assert summary["event"] == "summary" and summary["exit_code"] == 1
        assert (summary["completed"], summary["failed"]) == (1, 1)
    else:
        assert lines[0].startswith("warning: model 'foo' (line 2) is not one this SDK knows")
        assert "completed 1; failed 1" in lines[-1]
    failed = [json.loads(text) for text in out.read_text().splitlines()
              if json.loads(text)["line"] == 2]
    assert failed[0]["status"] == "failed" and "model_not_found" in failed[0]["error"]
    again = run(emulator, "batch", str(jobs), "--out", str(out))  # the output as a whole
    assert again.returncode == 1, again.stderr


def test_batch_stopped_by_credits_exits_4_and_a_rerun_exits_0(tmp_path: Path) -> None:
    with FakeWanServer(credits=48, time_scale=0.01, pending_seconds=0.05
                       ).run_in_thread() as poor:
        jobs = jobs_file(tmp_path / "jobs.jsonl", line("t2v", "a"), line("t2v", "b"))
        out = tmp_path / "r.jsonl"
        done = run(poor, "--json", "batch", str(jobs), "--out", str(out), "--concurrency", "1")
        assert done.returncode == 4, done.stderr
        summary = json.loads(done.stderr.strip().splitlines()[-1])
        assert summary["not_submitted"] == 1 and "insufficient_credits" in summary["stopped_by"]
        poor.balance = 1000
        again = run(poor, "batch", str(jobs), "--out", str(out))
        assert again.returncode == 0, again.stderr
        assert "1 from an earlier run" in again.stderr


def test_skip_invalid_runs_the_other_lines_reporting_each_skipped_one(
    emulator: FakeWanServer, tmp_path: Path
) -> None:
    jobs = jobs_file(tmp_path / "jobs.jsonl", line("t2v"), "{not json",
                     '{"model": "t2v", "input": {"prompt": "p", "duration": 99}}')
    out = tmp_path / "r.jsonl"
    done = run(emulator, "batch", str(jobs), "--out", str(out), "--skip-invalid")
    assert done.returncode == 1, done.stderr  # not every line completed
    skipped = [text for text in done.stderr.splitlines() if text.startswith("skipped")]
    assert skipped[0].startswith("skipped line 2: not JSON")
    assert skipped[1].startswith("skipped line 3: duration")
    assert "skipped 2 invalid line(s)" in done.stderr
    assert [json.loads(text)["line"] for text in out.read_text().splitlines()] == [1]
    as_json = run(emulator, "--json", "batch", str(jobs), "--out", str(tmp_path / "j.jsonl"),
                  "--skip-invalid")
    events = [json.loads(text) for text in as_json.stderr.splitlines()]
    assert [(e["line"], e["event"]) for e in events if e["event"] == "skipped"] == [
        (2, "skipped"), (3, "skipped")]


# -- 3: filesystem problems are one line -----------------------------------------------

@pytest.mark.parametrize("where", ["missing", "directory"])
def test_an_output_that_cannot_be_written_is_one_error_line(
    emulator: FakeWanServer, tmp_path: Path, where: str
) -> None:
    jobs = jobs_file(tmp_path / "jobs.jsonl", line("t2v"))
    out = tmp_path / "no" / "such" / "r.jsonl" if where == "missing" else tmp_path
    before = emulator.stats.creates_accepted
    done = run(emulator, "batch", str(jobs), "--out", str(out))
    assert done.returncode == 2
    text = one_error_line(done)
    assert ("does not exist" in text and "mkdir -p" in text) if where == "missing" else (
        "is a directory" in text)
    assert emulator.stats.creates_accepted == before
    as_json = run(emulator, "--json", "batch", str(jobs), "--out", str(out))
    assert json_error(as_json)["code"] == "file_error"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_output_directory_without_permission_is_one_error_line(
    emulator: FakeWanServer, tmp_path: Path
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    done = run(emulator, "batch", str(jobs_file(tmp_path / "j.jsonl", line("t2v"))),
               "--out", str(locked / "r.jsonl"))
    assert done.returncode == 2 and "no permission" in one_error_line(done)


def test_a_write_that_fails_mid_batch_is_one_error_line(
    emulator: FakeWanServer, tmp_path: Path
) -> None:
    # a file size limit makes the journal's or the output's writes fail, as a full disk
    # would (Python ignores SIGXFSZ, so the write raises instead of killing the process)
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (48 * 1024, 48 * 1024))

    jobs = jobs_file(tmp_path / "jobs.jsonl", *(line("t2v", f"p{i}") for i in range(20)))
    done = run(emulator, "batch", str(jobs), "--out", str(tmp_path / "r.jsonl"),
               preexec_fn=limit)
    assert done.returncode == 2, done.stderr
    text = one_error_line(done)
    assert "writing the batch journal failed" in text or (
        "writing the results" in text and "File too large" in text), text
    assert "run the same command again" in text


def test_an_unreadable_jobs_file_is_one_error_line(emulator: FakeWanServer,
                                                   tmp_path: Path) -> None:
    done = run(emulator, "batch", str(tmp_path / "nope.jsonl"), "--out",
               str(tmp_path / "r.jsonl"))
    assert done.returncode == 2 and "No such file" in one_error_line(done)


# -- 4, 5: advice in the CLI's words; JSON errors --------------------------------------

def test_a_missing_key_says_what_to_type(tmp_path: Path) -> None:
    done = run(None, "credits")
    assert done.returncode == 3
    text = one_error_line(done)
    assert "--api-key" in text and "WAN_API_KEY" in text and "api_key=" not in text


def test_a_rejected_key_names_where_it_came_from(emulator: FakeWanServer) -> None:
    given = run(emulator, "--api-key", "sk-not-this-one", "credits")
    assert given.returncode == 3
    assert "the key given with --api-key" in one_error_line(given)
    from_env = run(emulator, "credits", env={"WAN_API_KEY": "sk-not-this-one"})
    assert from_env.returncode == 3 and "check $WAN_API_KEY" in one_error_line(from_env)
    error = json_error(run(emulator, "--json", "--api-key", "sk-not-this-one", "credits"))
    assert (error["type"], error["code"]) == ("AuthenticationError", "invalid_api_key")
    assert str(error["request_id"]).startswith("req_")


def test_plain_http_to_a_remote_host_advises_the_flag_the_cli_has(
    emulator: FakeWanServer,
) -> None:
    port = emulator.base_url.rsplit(":", 1)[1]
    remote = f"http://localhost.:{port}"  # not spelled as loopback, so refused
    refused = run(emulator, "--base-url", remote, "credits")
    assert refused.returncode == 3
    text = one_error_line(refused)
    assert "--allow-insecure-http" in text and "allow_insecure_http" not in text
    allowed = run(emulator, "--base-url", remote, "--allow-insecure-http", "credits")
    # past the check: it either reaches the emulator or fails to resolve the name
    assert allowed.returncode in (0, 5), allowed.stderr
    assert "--allow-insecure-http" not in allowed.stderr


def test_json_errors_are_one_object_and_the_status_says_the_kind(
    emulator: FakeWanServer,
) -> None:
    bad = run(emulator, "--json", "generate", "t2v", "--prompt", "p", "--duration", "99")
    assert bad.returncode == 2
    assert json_error(bad)["code"] == "validation_error"
    missing = run(emulator, "--json", "task", "no-such-task")
    assert json_error(missing)["code"] == "task_not_found"
    usage = run(emulator, "--json", "generate", "t2v")
    assert usage.returncode == 2 and json_error(usage)["type"] == "UsageError"


# -- 6: an unreachable gateway -------------------------------------------------------

def test_an_unreachable_gateway_says_so_plainly(tmp_path: Path) -> None:
    done = run(None, "--json", "--base-url", NOWHERE, "--api-key", "sk-test", "credits")
    assert done.returncode == 5
    error = json_error(done)
    assert error["code"] == "connection_error"
    assert f"nothing answered at {NOWHERE}" in str(error["message"])
    assert "--base-url" in str(error["message"])
    assert "ssl" not in done.stderr.lower()
    assert "retrying" not in done.stderr  # notes only on a terminal


def test_an_unreachable_gateway_shows_its_retries_on_a_terminal() -> None:
    code, screen = in_a_terminal("--base-url", NOWHERE, "--api-key", "sk-test", "credits")
    assert code == 5
    assert f"nothing answered at {NOWHERE}; retrying (2/5)" in screen
    assert "retrying (5/5)" in screen
    assert f"error: nothing answered at {NOWHERE}" in screen
    assert "ssl" not in screen.lower() and "Traceback" not in screen


def in_a_terminal(*args: str) -> tuple[int, str]:
    """Run ``wan26 *args`` on a pseudo-terminal; its exit status and what it wrote."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAN_")}
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([*WAN26, *args], stdin=terminal, stdout=terminal,
                            stderr=terminal, env=env, close_fds=True)
    os.close(terminal)
    chunks = []
    while True:
        try:
            data = os.read(controller, 4096)
        except OSError:  # EIO: the terminal closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(controller)
    return proc.wait(timeout=60), b"".join(chunks).decode()


# -- 7: options ------------------------------------------------------------------------

def test_concurrency_0_is_refused(emulator: FakeWanServer, tmp_path: Path) -> None:
    jobs = jobs_file(tmp_path / "jobs.jsonl", line("t2v"))
    done = run(emulator, "batch", str(jobs), "--out", str(tmp_path / "r.jsonl"),
               "--concurrency", "0")
    assert done.returncode == 2
    assert "--concurrency: must be a whole number >= 1, got '0'" in done.stderr
    assert not (tmp_path / "r.jsonl").exists()


@pytest.mark.parametrize("option", [["--api-key", "sk-x"], ["--base-url", NOWHERE]])
def test_demo_refuses_a_key_or_gateway_it_would_not_use(option: list[str]) -> None:
    for args in (["demo", *option], [*option, "demo"]):
        done = run(None, *args)
        assert done.returncode == 2
        text = one_error_line(done)
        assert option[0] in text and "runs its own emulator" in text


def _actions(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((f"{name} {n}", a) for n, a in _actions(sub))
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield (action.option_strings or [action.dest])[0], action


def test_every_option_has_help_text() -> None:
    fake_server = argparse.ArgumentParser()
    add_arguments(fake_server)
    missing = [name for name, action in [*_actions(_parser()), *_actions(fake_server)]
               if not action.help]
    assert missing == []


def test_every_command_has_a_description_in_its_help() -> None:
    for command in ("demo", "generate", "credits", "task", "watch", "batch"):
        done = run(None, command, "--help")
        assert done.returncode == 0
        body = done.stdout.split("\n\n")[1]  # after the usage: the description
        assert not body.lstrip().startswith(("positional", "options")), (command, body)
    assert "emulator" in run(None, "demo", "--help").stdout


# -- 8: the demo's temporary folder ----------------------------------------------------

def test_the_demo_leaves_no_temporary_folder(tmp_path: Path) -> None:
    done = run(None, "demo", env={"TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "a real MP4" in done.stdout and "removed again" in done.stdout
    assert list(tmp_path.glob("wan26-demo-*")) == []


# -- 9: the CLI page lists every command and every exit status -------------------------

def test_the_cli_page_lists_every_command_and_exit_status() -> None:
    from wan26_async.cli import _errors

    page = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    listing = page.split("```text", 1)[1].split("```", 1)[0]
    commands = next(a for a in _parser()._actions
                    if isinstance(a, argparse._SubParsersAction)).choices
    assert sorted(commands) == sorted(text.split()[1] for text in listing.strip().splitlines())
    table = page.split("## Errors and exit status", 1)[1]
    for name in _errors.__all__:
        if name.startswith("EXIT_"):
            assert f"\n| {getattr(_errors, name)} |" in table, name
