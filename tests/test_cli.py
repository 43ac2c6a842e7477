"""The wan26 command, run for real in a subprocess against the emulator."""

from __future__ import annotations

import importlib.util
import json
import os
import pty
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from wan26_async.testing import SAMPLE_VIDEO, FakeWanServer

WAN26 = [sys.executable, "-m", "wan26_async.cli"]


@pytest.fixture(scope="module")
def emulator() -> Iterator[FakeWanServer]:
    with FakeWanServer(time_scale=0.01, pending_seconds=0.05).run_in_thread() as server:
        yield server


def run(server: FakeWanServer | None, *args: str, timeout: float = 60
        ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAN_")}
    if server is not None:
        env.update(WAN_API_KEY=server.api_key, WAN_BASE_URL=server.base_url)
    return subprocess.run([*WAN26, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_generate_wait_download_makes_a_playable_mp4(emulator: FakeWanServer,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "robot.mp4"
    done = run(emulator, "generate", "t2v", "--prompt", "a robot", "--resolution", "720p",
               "--duration", "2", "--wait", "--download", str(out))
    assert done.returncode == 0, done.stderr
    assert "about 48 credits" in done.stderr
    assert "completed" in done.stdout and f"saved {out}" in done.stdout
    data = out.read_bytes()
    assert data[4:8] == b"ftyp" and len(data) == SAMPLE_VIDEO.stat().st_size


def test_json_output_parses(emulator: FakeWanServer) -> None:
    made = run(emulator, "--json", "generate", "i2v", "--prompt", "p", "--image-url",
               "https://example.com/a.png", "--duration", "2", "--resolution", "720p")
    assert made.returncode == 0, made.stderr
    task = json.loads(made.stdout)
    assert task["status"] == "pending" and task["estimated_credits"] == 48
    queried = run(emulator, "task", task["id"], "--json")
    assert json.loads(queried.stdout)["id"] == task["id"]
    credits = run(emulator, "credits", "--json")
    assert isinstance(json.loads(credits.stdout)["balance"], int | float)


@pytest.mark.parametrize(("prompt", "code"), [("fine", 0), ("[fail] refused", 1)])
def test_watch_exit_code_says_how_the_task_ended(emulator: FakeWanServer, prompt: str,
                                                 code: int) -> None:
    made = run(emulator, "--json", "generate", "t2v", "--prompt", prompt, "--duration", "2",
               "--resolution", "720p")
    task_id = json.loads(made.stdout)["id"]
    watched = run(emulator, "watch", task_id)
    assert watched.returncode == code, watched.stderr
    assert ("completed" if code == 0 else "failed") in watched.stdout


@pytest.mark.parametrize("args", [
    ["generate", "t2v", "--prompt", "p", "--duration", "99"],
    ["generate", "i2v", "--prompt", "p", "--image-url", "data:image/png;base64,AAAA"],
    ["generate", "t2v", "--prompt", "p", "--duration", "15"],  # 600 credits: needs --yes
])
def test_bad_input_gives_one_clear_line_and_a_failure_status(
    emulator: FakeWanServer, args: list[str]
) -> None:
    done = run(emulator, *args)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in done.stderr
    assert len([line for line in lines if line.startswith("error")]) == 1


def test_missing_prompt_is_a_usage_error(emulator: FakeWanServer) -> None:
    done = run(emulator, "generate", "t2v")
    assert done.returncode == 2 and "--prompt" in done.stderr


def test_a_bad_key_is_one_line_without_the_key(emulator: FakeWanServer) -> None:
    done = run(emulator, "--api-key", "sk-not-this-one", "credits")
    assert done.returncode == 3  # configuration or authentication
    assert done.stderr.startswith("error: 401 invalid_api_key")
    assert "sk-not-this-one" not in done.stderr and "Traceback" not in done.stderr


def test_demo_piped_prints_plain_lines_and_the_summary() -> None:
    done = run(None, "demo", timeout=60)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "no key or network needed" in out
    assert "-> completed" in out and "-> failed" in out and "credits refunded" in out
    assert "status" in out and "seconds" in out  # the summary table
    assert "a real MP4" in out
    assert out.strip().splitlines()[-1].endswith("credits spent: 960")
    assert "\x1b[" not in out  # no terminal control codes when piped


def _in_a_terminal(*args: str, env: dict[str, str] | None = None) -> str:
    """Run ``wan26 *args`` on a pseudo-terminal (no WAN_ variables but ``env``); assert it
    exits 0 and return everything it wrote."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("WAN_")}, **(env or {})}
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
    assert proc.wait(timeout=60) == 0
    return b"".join(chunks).decode()


def test_demo_in_a_terminal_renders_and_ends_cleanly() -> None:
    screen = _in_a_terminal("demo")
    assert "-> completed" in screen and "credits spent: 960" in screen
    assert "Traceback" not in screen
    if importlib.util.find_spec("rich") is not None:  # the cli extra draws a live board
        assert "\x1b[" in screen and "│" in screen
        assert "\x1b[?25h" in screen  # the cursor is shown again at the end


def test_fake_server_json_prints_where_it_listens_and_serves_there() -> None:
    proc = subprocess.Popen([*WAN26, "--json", "fake-server", "--credits", "55"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["base_url"].startswith("http://127.0.0.1:") and info["pid"] == proc.pid
        credits = run(None, "--json", "credits", "--base-url", info["base_url"],
                      "--api-key", info["api_key"])
        assert credits.returncode == 0, credits.stderr
        assert json.loads(credits.stdout)["balance"] == 55
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_watch_in_a_terminal_redraws_one_status_line() -> None:
    with FakeWanServer(time_scale=0.4, pending_seconds=2).run_in_thread() as slow:
        made = run(slow, "--json", "generate", "t2v", "--prompt", "p", "--duration", "2",
                   "--resolution", "720p")  # pending 2 s, then processing 2 s
        screen = _in_a_terminal("watch", json.loads(made.stdout)["id"],
                                env={"WAN_API_KEY": slow.api_key,
                                     "WAN_BASE_URL": slow.base_url})
    lines = screen.replace("\r\n", "\n").split("\n")
    status = lines[0].split("\r")[-1]  # what the line shows at the end
    # the statuses seen, each with when it was seen (pending unless the machine is slow
    # enough to start the watch late; processing may fall between two polls)
    assert status.split("s  ")[1].split(" -> ")[0] in ("pending", "processing"), status
    assert "-> completed (" in status, status
    assert screen.count("\r") > 3  # redrawn in place as time passes, not a line per change
    assert lines[1].startswith("http")  # then the video's URL
