"""The programs under examples/ run, against the emulator."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from aiohttp.test_utils import TestClient, TestServer

from wan26_async.testing import FakeWanServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_fan_out_script_saves_every_video_and_reports_the_failure(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a robot\nwaves at dawn\n[fail] refused\nleaves in the wind\n")
    done = subprocess.run([sys.executable, str(EXAMPLES / "fan_out_script.py"), str(prompts),
                           str(tmp_path / "out"), "--emulator"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1  # one prompt is refused by the emulator
    assert "#2 failed" in done.stderr
    videos = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert videos == ["0000.mp4", "0001.mp4", "0003.mp4"]


async def test_the_aiohttp_service_shares_one_client(monkeypatch: pytest.MonkeyPatch) -> None:
    service = load("aiohttp_service")
    async with FakeWanServer(time_scale=0.01, pending_seconds=0.05) as api:
        monkeypatch.setenv("WAN_API_KEY", api.api_key)
        monkeypatch.setenv("WAN_BASE_URL", api.base_url)
        async with TestClient(TestServer(service.make_app())) as http:
            made = await http.post("/videos", json={"prompt": "a robot", "duration": 2})
            assert made.status == 202
            task_id = (await made.json())["id"]
            seen = await http.get(f"/videos/{task_id}")
            assert (await seen.json())["id"] == task_id
            bad = await http.post("/videos", json={"prompt": "a robot", "duration": 99})
            assert bad.status == 400 and (await bad.json())["field"] == "duration"
            missing = await http.get("/videos/no-such-task")
            assert missing.status == 404
