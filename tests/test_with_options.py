"""Configuration as a value: one frozen config per client, read-only settings, and
``with_options`` views that share the session, limiter, callbacks and closed state."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import wan26_async as wan
from wan26_async.testing import FakeWanServer, Fault

from .conftest import FAST_POLL, FAST_RETRY, client_tasks, eventually


def credits_calls(server: FakeWanServer) -> int:
    return sum(r.route == "credits" for r in server.requests)


def test_settings_are_read_only(client: wan.AsyncWanClient) -> None:
    # Today's drift (a new client.retry reached downloads only) cannot happen: there
    # is one config, and a different one is a view.
    for name, value in [("retry", wan.RetryPolicy(max_retries=0)), ("timeout", 1.0),
                        ("poll", FAST_POLL), ("rate_limiter", None), ("callbacks", None),
                        ("base_url", "https://x.example"), ("max_concurrency", 1),
                        ("resend_ambiguous_creates", True)]:
        with pytest.raises(AttributeError):
            setattr(client, name, value)
    assert client.retry is FAST_RETRY and client.timeout == 5 and client.poll is FAST_POLL


async def test_a_view_shares_the_pool_limiter_and_callbacks(server: FakeWanServer) -> None:
    async with wan.CallbackReceiver() as receiver, wan.AsyncWanClient(
        api_key=server.api_key, base_url=server.base_url, callbacks=receiver, retry=FAST_RETRY
    ) as client:
        view = client.with_options(timeout=10, max_retries=0)
        assert view.rate_limiter is client.rate_limiter
        assert view.callbacks is client.callbacks is receiver
        assert view.base_url == client.base_url
        assert view.max_concurrency == client.max_concurrency
        await view.get_credits()
        await client.get_credits()
        assert view._transport.session() is client._transport.session()  # one pool
        assert (view.timeout, view.retry.max_retries) == (10, 0)
        assert (client.timeout, client.retry) == (60.0, FAST_RETRY)  # unchanged
        # max_retries alone keeps the client's backoff
        assert view.retry.initial_backoff == FAST_RETRY.initial_backoff
        task = await view.create_task(wan.TextToVideo(prompt="p"))
        assert (server.requests[-1].json or {}).get("callback_url") == receiver.callback_url
        assert (await client.get_task(task.id)).id == task.id


async def test_a_view_shares_max_concurrency_with_its_client(server: FakeWanServer) -> None:
    async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                  max_concurrency=1, retry=FAST_RETRY) as client:
        view = client.with_options(timeout=30)
        server.inject("credits", Fault.delay(0.5))
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.get_credits)
            await eventually(lambda: credits_calls(server) == 1)
            tg.start_soon(view.get_credits)
            await eventually(lambda: server.stats.requests >= 2, timeout=10)
            # the view's call waited for the client's slot: never two at once
    assert server.stats.max_in_flight == 1


async def test_a_view_s_max_retries_applies_and_the_client_s_is_untouched(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    once = client.with_options(max_retries=0)
    server.inject("credits", Fault.error(500, "internal_error"))
    with pytest.raises(wan.InternalServerError):
        await once.get_credits()
    assert credits_calls(server) == 1  # not retried
    server.inject("credits", Fault.error(500, "internal_error"))
    assert (await client.get_credits()).balance > 0  # the client retried it
    assert credits_calls(server) == 3


async def test_a_view_s_timeout_applies(client: wan.AsyncWanClient, server: FakeWanServer
                                        ) -> None:
    quick = client.with_options(timeout=0.2, max_retries=0)
    server.inject("credits", Fault.delay(1.0))
    with pytest.raises(wan.APITimeoutError) as info:
        await quick.get_credits()
    assert "0.2 s" in str(info.value)
    server.inject("credits", Fault.delay(0.5))
    assert (await client.get_credits()).balance > 0  # the client's 5 s still applies


async def test_a_view_s_retry_policy_applies_to_downloads_too(
    client: wan.AsyncWanClient, server: FakeWanServer, tmp_path: Path
) -> None:
    task = await client.generate(wan.TextToVideo(prompt="p", resolution="720p", duration=2))
    assert task.video_url is not None
    server.inject("video", Fault.truncated())  # half the bytes, then the connection drops
    with pytest.raises(wan.APIConnectionError):
        await client.with_options(max_retries=0).download(task.video_url, tmp_path / "a.mp4")
    assert not (tmp_path / "a.mp4").exists()
    server.inject("video", Fault.truncated())
    path = await client.download(task.video_url, tmp_path / "b.mp4")  # resumed
    assert path.stat().st_size > 0


async def test_a_view_s_poll_policy_is_the_one_its_watches_use(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    sleepy = wan.PollPolicy(initial=30.0, max_interval=30.0, learn=False)
    view = client.with_options(poll=sleepy)
    assert view.poll is sleepy and client.poll is FAST_POLL
    task = await client.create_task(wan.TextToVideo(prompt="p", duration=15))  # ~0.3 s
    events = view.watch(task.id)
    assert not (await events.__anext__()).is_terminal
    polls = len(server.requests)
    # The client's own watch (polling every few ms) finishes while the view's sleeps.
    assert (await client.wait(task.id)).status is wan.TaskStatus.COMPLETED
    assert len(server.requests) > polls
    await view.aclose()  # ends the view's sleeping watch at once
    with anyio.fail_after(1), pytest.raises(wan.ClientClosedError):
        await events.__anext__()


async def test_closing_a_view_closes_only_the_view(client: wan.AsyncWanClient) -> None:
    view = client.with_options(timeout=2)
    async with view:  # a view may be used as a context manager; it needs none
        await view.get_credits()
    with pytest.raises(wan.ClientClosedError) as info:
        await view.get_credits()
    assert "with_options" in str(info.value)  # says it is the view that was closed
    assert (await client.get_credits()).balance > 0
    assert (await client.with_options(timeout=3).get_credits()).balance > 0


async def test_closing_the_client_closes_every_view(server: FakeWanServer) -> None:
    before = client_tasks()
    client = wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url)
    view = client.with_options(timeout=3)
    grandchild = view.with_options(max_retries=1)
    await grandchild.get_credits()
    await client.aclose()
    for closed in (view, grandchild):
        with pytest.raises(wan.ClientClosedError) as info:
            await closed.get_credits()
        assert "aclose()" in str(info.value)  # the client itself was closed
    assert client_tasks() <= before  # views left nothing running


@pytest.mark.parametrize(("kw", "words"), [
    ({"timeout": 0}, "timeout must be positive"),
    ({"timeout": -1.0}, "timeout must be positive"),
    ({"max_retries": 1, "retry": wan.RetryPolicy()}, "not both"),
])
def test_with_options_refuses_bad_settings(client: wan.AsyncWanClient, kw: dict[str, object],
                                           words: str) -> None:
    with pytest.raises(wan.ConfigurationError, match=words):
        client.with_options(**kw)  # type: ignore[arg-type]
