"""client.download: streamed, resumed, atomic, and never with the API key."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

import wan26_async as wan
from wan26_async.testing import SAMPLE_VIDEO, FakeWanServer, Fault


async def completed(client: wan.AsyncWanClient) -> wan.Task:
    return await client.generate(wan.TextToVideo(prompt="p", resolution="720p", duration=2),
                                 timeout=10)


def video_requests(server: FakeWanServer) -> list[object]:
    return [r for r in server.requests if r.route == "video"]


async def test_download_writes_the_real_mp4_and_reports_progress(
    client: wan.AsyncWanClient, server: FakeWanServer, tmp_path: Path
) -> None:
    task = await completed(client)
    assert task.video_url is not None
    seen: list[tuple[int, int | None]] = []
    path = await client.download(task.video_url, tmp_path / "out.mp4",
                                 progress=lambda done, total: seen.append((done, total)))
    data = path.read_bytes()
    assert data == SAMPLE_VIDEO.read_bytes()
    assert data[4:8] == b"ftyp"  # an MP4 file
    assert seen[-1] == (len(data), len(data))
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]  # no temp file left


async def test_download_never_sends_the_api_key_to_the_video_host(
    client: wan.AsyncWanClient, server: FakeWanServer, tmp_path: Path
) -> None:
    task = await completed(client)
    assert task.video_url is not None
    await client.download(task.video_url, tmp_path)
    (req,) = video_requests(server)
    assert req.header("Authorization") is None  # type: ignore[attr-defined]
    assert server.api_key not in str(req.headers)  # type: ignore[attr-defined]


async def test_a_dropped_download_is_resumed_where_it_stopped(
    client: wan.AsyncWanClient, server: FakeWanServer, tmp_path: Path
) -> None:
    task = await completed(client)
    assert task.video_url is not None
    server.inject("video", Fault.truncated())  # half the bytes, then the connection drops
    path = await client.download(task.video_url, tmp_path / "v.mp4")
    assert path.read_bytes() == SAMPLE_VIDEO.read_bytes()
    first, second = video_requests(server)
    assert first.header("Range") is None  # type: ignore[attr-defined]
    assert second.header("Range").startswith("bytes=")  # type: ignore[attr-defined]
    assert second.header("Range") != "bytes=0-"  # type: ignore[attr-defined]


async def test_a_failed_download_leaves_no_file(
    client: wan.AsyncWanClient, server: FakeWanServer, tmp_path: Path
) -> None:
    with pytest.raises(wan.APIError) as info:
        await client.download(f"{server.base_url}/videos/no-such-task.mp4",
                              tmp_path / "v.mp4")
    assert info.value.status_code == 404
    assert list(tmp_path.iterdir()) == []


async def test_a_download_url_must_be_http(client: wan.AsyncWanClient, tmp_path: Path) -> None:
    with pytest.raises(wan.ValidationError):
        await client.download("file:///etc/passwd", tmp_path / "x")


async def test_a_200_mb_download_keeps_memory_flat(
    client: wan.AsyncWanClient, server: FakeWanServer, tmp_path: Path
) -> None:
    big = tmp_path / "big.mp4"
    with big.open("wb") as f:  # sparse: instant to make, real bytes on the wire
        f.truncate(200 * 1024 * 1024)
    server.video_path = big
    task = await completed(client)
    assert task.video_url is not None
    tracemalloc.start()
    try:
        path = await client.download(task.video_url, tmp_path / "copy.mp4")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert path.stat().st_size == 200 * 1024 * 1024
    assert peak < 8 * 1024 * 1024  # chunks, not the whole file
