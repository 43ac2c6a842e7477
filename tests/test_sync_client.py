"""WanClient, the blocking facade: plain code, threads, a running loop, Ctrl-C, fork.

The emulator runs in its own thread (``run_in_thread``) so that blocking calls of the
test's thread never block the server.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import wan26_async as wan
from wan26_async.testing import SAMPLE_VIDEO, FakeWanServer, Faults

from .conftest import FAST, FAST_POLL, FAST_RETRY

#: A task that stays processing for the whole test (about 100 s).
SLOW = {"time_scale": 0.01, "pending_seconds": 0.0, "processing_seconds": 10_000.0}


def request(i: int = 0, prompt: str = "p") -> wan.TextToVideo:
    return wan.TextToVideo(prompt=f"{prompt}{i}", resolution="720p", duration=2)


def wait_until(condition: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Wait until ``condition()`` is true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.005)


def make_client(server: FakeWanServer, **options: Any) -> wan.WanClient:
    defaults = {"api_key": server.api_key, "base_url": server.base_url, "poll": FAST_POLL,
                "retry": FAST_RETRY, "timeout": 5}
    return wan.WanClient(**{**defaults, **options})


def loop_tasks(client: wan.WanClient) -> int:
    """How many tasks run on the client's loop now (this probe's own included)."""
    return client._loop.portal.call(lambda: len(asyncio.all_tasks()))


def creates(server: FakeWanServer) -> int:
    return sum(r.route == "create" for r in server.requests)


@pytest.fixture
def server() -> Iterator[FakeWanServer]:
    with FakeWanServer(**FAST).run_in_thread() as srv:
        yield srv


@pytest.fixture
def client(server: FakeWanServer) -> Iterator[wan.WanClient]:
    with make_client(server) as c:
        yield c


def test_a_generation_from_plain_code(client: wan.WanClient, server: FakeWanServer,
                                      tmp_path: Path) -> None:
    task = client.generate(request())
    assert task.status is wan.TaskStatus.COMPLETED
    assert server.tasks[task.id].status == "completed"
    path = client.download(task.video_url or "", tmp_path / "out.mp4")
    assert path.read_bytes() == SAMPLE_VIDEO.read_bytes()
    assert client.get_credits().balance == server.balance
    assert client.get_task(task.id).id == task.id


def test_the_watch_yields_each_status_once() -> None:
    # 0.2 s pending and 0.3 s processing: the fast polls see every status many times
    with FakeWanServer(time_scale=0.01, pending_seconds=20,
                       processing_seconds=30).run_in_thread() as server, \
            make_client(server) as client:
        task = client.create_task(request())
        events = list(client.watch(task.id))
    assert [e.status for e in events] == [wan.TaskStatus.PENDING, wan.TaskStatus.PROCESSING,
                                          wan.TaskStatus.COMPLETED]
    assert [e.previous for e in events] == [None, wan.TaskStatus.PENDING,
                                            wan.TaskStatus.PROCESSING]
    assert sum(r.route == "get" for r in server.requests) > len(events)  # polled more often


async def test_it_works_inside_a_running_loop(server: FakeWanServer) -> None:
    asyncio.get_running_loop()  # like a notebook cell, where asyncio.run would fail
    with make_client(server) as client:
        task = client.generate(request())
        outcomes = list(client.fan_out([request(i) for i in range(3)], concurrency=2))
    assert task.status is wan.TaskStatus.COMPLETED
    assert sorted(o.index for o in outcomes if o.ok) == [0, 1, 2]


def test_threads_share_one_max_concurrency() -> None:
    # every request is held 20 ms at the server, so 8 threads pile up if nothing bounds them
    with FakeWanServer(**FAST, faults=Faults(latency=0.02)).run_in_thread() as server, \
            make_client(server, max_concurrency=4) as client:
        results: list[wan.Task] = []

        def work(i: int) -> None:
            results.append(client.generate(request(i)))
            results.append(client.generate(request(i, "again")))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 16
    assert all(t.status is wan.TaskStatus.COMPLETED for t in results)
    assert 2 <= server.stats.max_in_flight <= 4


@pytest.mark.parametrize("leave", ["close", "with", "break"])
def test_leaving_a_fan_out_early_sends_no_further_create(
    leave: str, client: wan.WanClient, server: FakeWanServer
) -> None:
    requests = [request(i) for i in range(12)]
    idle = loop_tasks(client)
    if leave == "close":
        outcomes = client.fan_out(requests, concurrency=2)
        first = next(outcomes)
        outcomes.close()
    elif leave == "with":
        with client.fan_out(requests, concurrency=2) as outcomes:
            first = next(outcomes)
    else:
        for outcome in client.fan_out(requests, concurrency=2):
            first = outcome
            break
    left = time.monotonic()  # the emulator's clock too
    assert first.ok
    assert loop_tasks(client) == idle  # once left, nothing is left that could submit
    # Each of the 2 submitters creates its next task only after its last one completed,
    # so by the time it was left at most 2 creates were not yet followed by a completion.
    done_then = sum(t.status_at(left) == "completed" for t in server.tasks.values())
    # Let every task created so far finish: a submitter still alive would send more.
    wait_until(lambda: creates(server) == len(server.tasks) and all(
        t.status == "completed" for t in server.tasks.values()))
    client.get_credits()
    assert creates(server) <= done_then + 2
    assert creates(server) < len(requests)


def test_closing_ends_its_thread(server: FakeWanServer) -> None:
    before = threading.active_count()
    client = make_client(server)
    assert threading.active_count() == before + 1
    client.get_credits()
    client.close()
    assert threading.active_count() == before
    client.close()  # idempotent


def test_closing_closes_the_rate_limiter_it_was_given(server: FakeWanServer) -> None:
    # A limiter given to a WanClient runs on its thread (no other client can use it),
    # and blocking code has no loop to await its aclose() on: closing the client does.
    closed: list[bool] = []

    class Recording(wan.InProcessRateLimiter):
        async def aclose(self) -> None:
            closed.append(True)
            await super().aclose()

    limiter = Recording()
    client = make_client(server, rate_limiter=limiter)
    view = client.with_options(timeout=3)
    view.get_credits()
    view.close()  # a view shares it: not closed by the view
    assert closed == []
    client.close()
    assert closed == [True]


def test_a_closed_client_raises_client_closed_error_and_sends_nothing(
        server: FakeWanServer, tmp_path: Path) -> None:
    client = make_client(server)
    task = client.create_task(request())
    watching = client.watch(task.id)
    next(watching)
    client.close()
    sent = len(server.requests)
    calls: dict[str, Callable[[], object]] = {
        "create_task": lambda: client.create_task(request()),
        "get_task": lambda: client.get_task(task.id),
        "get_credits": client.get_credits,
        "wait": lambda: client.wait(task.id),
        "generate": lambda: client.generate(request()),
        "download": lambda: client.download(server.video_url(task.id), tmp_path),
        "watch": lambda: client.watch(task.id),
        "fan_out": lambda: client.fan_out([request()]),
        "with_options": lambda: client.with_options(timeout=1),
        "a watch open when it closed": lambda: next(watching),
    }
    for name, call in calls.items():
        with pytest.raises(wan.ClientClosedError, match=r"closed.*new client") as info:
            call()
        # the same class as the async client's, and not a transient error to retry
        assert not isinstance(info.value, wan.APIConnectionError), name
    assert len(server.requests) == sent
    assert list(tmp_path.iterdir()) == []


def test_closing_stops_a_call_of_another_thread() -> None:
    with FakeWanServer(**SLOW).run_in_thread() as server:
        client = make_client(server)
        task = client.create_task(request())
        errors: list[BaseException] = []

        def waiter() -> None:
            try:
                client.wait(task.id)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=waiter)
        thread.start()
        wait_until(lambda: any(r.route == "get" for r in server.requests))
        client.close()
        thread.join(10)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], wan.ClientClosedError), errors


def test_the_error_classes_are_the_same(client: wan.WanClient, server: FakeWanServer,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(wan.TaskNotFoundError) as not_found:
        client.get_task("task_that_does_not_exist")
    assert type(not_found.value) is wan.TaskNotFoundError
    assert not_found.value.status_code == 404
    with pytest.raises(wan.TaskFailedError) as failed:
        client.generate(request(prompt="[fail]"))
    assert type(failed.value) is wan.TaskFailedError
    assert failed.value.task.status is wan.TaskStatus.FAILED
    with pytest.raises(wan.ValidationError):
        client.watch("")
    with make_client(server, api_key="sk-wrong") as stranger, \
            pytest.raises(wan.AuthenticationError):
        stranger.get_credits()
    monkeypatch.delenv("WAN_API_KEY", raising=False)
    before = threading.active_count()
    with pytest.raises(wan.ConfigurationError, match="no API key"):
        wan.WanClient(base_url=server.base_url)
    assert threading.active_count() == before  # a failed start leaves no thread behind


def test_an_unclosed_client_warns_and_its_thread_ends(server: FakeWanServer) -> None:
    client = make_client(server)
    client.get_credits()
    thread = client._loop.thread
    with pytest.warns(ResourceWarning, match="unclosed WanClient"):
        del client
        gc.collect()
    thread.join(10)
    assert not thread.is_alive()


def test_ctrl_c_cancels_the_call_cleanly() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    # A suite started in the background (`nox -s tests &`, some CI runners) inherits
    # SIGINT ignored, and Python then keeps ignoring it: Ctrl-C is what is tested here.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _press_ctrl_c_during_a_wait()
    finally:
        signal.signal(signal.SIGINT, before)


def _press_ctrl_c_during_a_wait() -> None:
    with FakeWanServer(**SLOW).run_in_thread() as server, make_client(server) as client:
        task = client.create_task(request())
        idle = loop_tasks(client)
        main = threading.main_thread().ident
        assert main is not None

        def press_ctrl_c() -> None:  # once the wait is polling
            wait_until(lambda: any(r.route == "get" for r in server.requests))
            signal.pthread_kill(main, signal.SIGINT)

        presser = threading.Thread(target=press_ctrl_c)
        presser.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                client.wait(task.id)
        finally:
            presser.join()
        assert loop_tasks(client) == idle  # the wait was cancelled before the interrupt
        assert client.get_task(task.id).status is wan.TaskStatus.PROCESSING  # still usable


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_a_clear_error(client: wan.WanClient) -> None:
    client.get_credits()
    pid = os.fork()
    if pid == 0:  # the child: report by exit status only, never return into pytest
        code = 1
        try:
            client.get_credits()
        except wan.WanError as exc:
            code = 0 if "after os.fork()" in str(exc) else 2
        except BaseException:
            code = 3
        try:
            client.close()  # forgets it, instead of waiting on a thread that is not here
        except BaseException:
            code = 4
        os._exit(code)
    deadline = time.monotonic() + 20
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert client.get_credits().balance > 0  # the parent's client is untouched


def test_every_method_of_the_async_client_has_a_blocking_twin() -> None:
    def public(cls: type) -> set[str]:
        return {n for n, v in inspect.getmembers(cls, callable) if not n.startswith("_")}

    assert public(wan.AsyncWanClient) - {"aclose"} <= public(wan.WanClient)
    for name in public(wan.AsyncWanClient) - {"aclose"}:
        async_sig = inspect.signature(getattr(wan.AsyncWanClient, name))
        sync_sig = inspect.signature(getattr(wan.WanClient, name))
        assert [(p.name, p.kind, p.default) for p in async_sig.parameters.values()] == \
               [(p.name, p.kind, p.default) for p in sync_sig.parameters.values()], name
        async_doc = inspect.getdoc(getattr(wan.AsyncWanClient, name)) or ""
        sync_doc = inspect.getdoc(getattr(wan.WanClient, name)) or ""
        assert sync_doc.splitlines()[0] == async_doc.splitlines()[0], name
        assert "await " not in sync_doc and "async for" not in sync_doc, name
    init = {n: p.default for n, p in inspect.signature(wan.AsyncWanClient).parameters.items()}
    del init["session"]  # bound to one event loop: the blocking client's loop is private
    assert init == {n: p.default
                    for n, p in inspect.signature(wan.WanClient).parameters.items()}


def test_a_callback_receiver_runs_on_the_clients_loop(server: FakeWanServer) -> None:
    receiver = wan.CallbackReceiver()
    with make_client(server, callbacks=receiver) as client:
        task = client.generate(request())
        assert task.status is wan.TaskStatus.COMPLETED
        wait_until(lambda: any(c.task_id == task.id and c.status == 200
                               for c in server.callbacks))
    with pytest.raises(RuntimeError, match="not started"):
        receiver.url  # noqa: B018 - stopped with the client that started it


@pytest.mark.skipif(not hasattr(wan.AsyncWanClient, "with_options"),
                    reason="lands with AsyncWanClient.with_options")
def test_with_options_shares_the_thread_pool_and_limiter(client: wan.WanClient,
                                                         server: FakeWanServer) -> None:
    before = threading.active_count()
    fast = client.with_options(timeout=2, max_retries=0)
    assert threading.active_count() == before  # no thread of its own
    assert fast.rate_limiter is client.rate_limiter
    assert fast.generate(request()).status is wan.TaskStatus.COMPLETED
    fast.close()  # closes the view only
    assert client.get_credits().balance == server.balance
    with pytest.raises(wan.WanError):
        fast.get_credits()
    del fast
    gc.collect()  # a view dropped unclosed does not warn (ResourceWarning is an error)
