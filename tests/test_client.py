"""AsyncWanClient against FakeWanServer over real loopback sockets."""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings
from email.utils import formatdate
from typing import Any

import aiohttp
import pytest

import wan26_async as wan
from wan26_async.testing import FakeWanServer, Fault, TokenBucket

from .conftest import FAST, FAST_RETRY
from .test_requests import I2V_EXAMPLE, R2V_EXAMPLE, T2V_EXAMPLE

HOOK = "https://your-server.com/webhook"


def creates(server: FakeWanServer) -> list[Any]:
    return [r for r in server.requests if r.route == "create"]


# -- the happy path on the wire ----------------------------------------------------------


@pytest.mark.parametrize("example", [T2V_EXAMPLE, I2V_EXAMPLE, R2V_EXAMPLE])
async def test_spec_examples_arrive_on_the_wire_exactly(
    client: wan.AsyncWanClient, server: FakeWanServer, example: dict[str, Any]
) -> None:
    request = wan.request_from_dict(example)
    task = await client.create_task(request, callback_url=HOOK)
    (received,) = creates(server)
    assert received.json == {"model": example["model"], "callback_url": HOOK,
                             "input": example["input"]}
    assert received.header("Authorization") == f"Bearer {server.api_key}"
    assert task.id in server.tasks


async def test_create_then_get_follows_the_task_to_completion(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    task = await client.create_task(wan.TextToVideo(prompt="robot", resolution="720p",
                                                    duration=2))
    assert task.status is wan.TaskStatus.PENDING
    final = await client.wait(task.id, timeout=10)
    assert final.status is wan.TaskStatus.COMPLETED
    assert final.video_url == server.video_url(task.id)
    assert final.raw["taskId"] == task.id


async def test_credits_are_charged_at_creation_and_refunded_on_failure(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    start = (await client.get_credits()).balance
    ok = wan.TextToVideo(prompt="fine", resolution="720p", duration=3)
    bad = wan.TextToVideo(prompt="[fail] refused", duration=2)
    t_ok = await client.create_task(ok)
    t_bad = await client.create_task(bad)
    charged = (await client.get_credits()).balance
    assert charged == start - ok.estimated_credits - bad.estimated_credits
    assert (await client.wait(t_ok.id, timeout=10)).status is wan.TaskStatus.COMPLETED
    with pytest.raises(wan.TaskFailedError) as info:
        await client.wait(t_bad.id, timeout=10)
    assert info.value.task.id == t_bad.id and info.value.reason
    assert (await client.get_credits()).balance == start - ok.estimated_credits


# -- validation never reaches the network -------------------------------------------------

EDGE_ACCEPTED = [
    wan.TextToVideo(prompt="x" * 1500, negative_prompt="n" * 500, duration=15, seed=2147483647,
                    aspect_ratio="3:4", resolution="720p", shot_type="multi",
                    prompt_extend=True, watermark=True, audio_urls=["http://a.test/a.mp3"]),
    wan.TextToVideo(prompt="p", duration=2, seed=0, aspect_ratio="1:1", shot_type="single",
                    prompt_extend=False),
    wan.ImageToVideo(prompt="p", image_urls=["http://a.test/a.png"], duration=15, audio=False),
    wan.ReferenceToVideo(prompt="p", image_urls=["https://a.test/a.png"] * 5, duration=10),
    wan.ReferenceToVideo(prompt="p", image_urls=["https://a.test/a.png"] * 2,
                         video_urls=["https://a.test/a.mp4"] * 3, duration=2),
    wan.ReferenceToVideo(prompt="p", video_urls=["https://a.test/a.mp4"], aspect_ratio="4:3"),
]


@pytest.mark.parametrize("request_", EDGE_ACCEPTED)
async def test_what_the_sdk_accepts_the_emulator_accepts(
    client: wan.AsyncWanClient, server: FakeWanServer, request_: wan.VideoRequest
) -> None:
    task = await client.create_task(request_)
    assert server.tasks[task.id].price == request_.estimated_credits


async def test_invalid_callback_url_fails_before_any_request(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    with pytest.raises(wan.ValidationError, match="callback_url"):
        await client.create_task(wan.TextToVideo(prompt="p"), callback_url="ftp://x")
    assert server.requests == []


# -- every error of the spec's table ------------------------------------------------------


async def test_bad_key_is_an_authentication_error(server: FakeWanServer) -> None:
    async with wan.AsyncWanClient(api_key="sk-wrong", base_url=server.base_url) as client:
        with pytest.raises(wan.AuthenticationError) as info:
            await client.get_credits()
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
    assert info.value.request_id and info.value.request_id.startswith("req_")
    assert "sk-wrong" not in str(info.value) and "sk-wrong" not in repr(info.value)


async def test_forbidden_key_is_permission_denied() -> None:
    async with FakeWanServer(forbidden_keys={"sk-blocked"}, **FAST) as server:
        async with wan.AsyncWanClient(api_key="sk-blocked", base_url=server.base_url) as client:
            with pytest.raises(wan.PermissionDeniedError):
                await client.create_task(wan.TextToVideo(prompt="p"))


async def test_unknown_model_and_task_are_not_found(client: wan.AsyncWanClient) -> None:
    with pytest.raises(wan.ModelNotFoundError):
        await client.create_task(wan.TextToVideo(prompt="p", model="wan-9-imaginary"))
    with pytest.raises(wan.TaskNotFoundError):
        await client.get_task("no-such-task")


async def test_insufficient_credits_is_not_retried() -> None:
    async with FakeWanServer(credits=100, **FAST) as server:
        async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                      retry=FAST_RETRY) as client:
            with pytest.raises(wan.InsufficientCreditsError, match="top up"):
                await client.create_task(wan.TextToVideo(prompt="p"))
        assert len(creates(server)) == 1 and server.tasks == {}


async def test_spend_limit_reaches_the_server_exactly_once() -> None:
    async with FakeWanServer(spend_limit=250, **FAST) as server:
        async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                      retry=FAST_RETRY) as client:
            await client.create_task(wan.TextToVideo(prompt="p"))  # 200 credits
            with pytest.raises(wan.SpendLimitError) as info:
                await client.create_task(wan.TextToVideo(prompt="q"))
        assert info.value.status_code == 429 and info.value.code == "spend_limit_exceeded"
        assert len(creates(server)) == 2 and len(server.tasks) == 1


@pytest.mark.parametrize(("status", "code", "cls"), [
    (400, "invalid_request", wan.BadRequestError),
    (401, "invalid_api_key", wan.AuthenticationError),
    (402, "insufficient_credits", wan.InsufficientCreditsError),
    (403, "ip_not_allowed", wan.PermissionDeniedError),
    (404, "model_not_found", wan.ModelNotFoundError),
    (404, "task_not_found", wan.TaskNotFoundError),
    (429, "spend_limit_exceeded", wan.SpendLimitError),
])
async def test_each_non_retryable_error_code_maps_to_its_class_after_one_request(
    client: wan.AsyncWanClient, server: FakeWanServer, status: int, code: str, cls: type
) -> None:
    server.inject("credits", Fault.error(status, code, message="scripted"))
    with pytest.raises(cls) as info:
        await client.get_credits()
    assert (info.value.status_code, info.value.code) == (status, code)
    assert len(server.requests) == 1


@pytest.mark.parametrize(("status", "code", "cls"), [
    (429, "rate_limit_exceeded", wan.RateLimitError),
    (500, "internal_error", wan.InternalServerError),
    (503, "upstream_error", wan.UpstreamError),
])
async def test_retryable_errors_are_retried_then_raised_typed(
    server: FakeWanServer, status: int, code: str, cls: type
) -> None:
    retry = wan.RetryPolicy(max_retries=2, initial_backoff=0.01)
    server.inject("credits", Fault.error(status, code, retry_after="0"), times=3)
    async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                  retry=retry) as client:
        with pytest.raises(cls):
            await client.get_credits()
        assert len(server.requests) == 3
        # the next call goes through: the faults were used up
        assert (await client.get_credits()).balance == server.balance


@pytest.mark.parametrize(("fault", "cls"), [
    (Fault.html(502), wan.InternalServerError),
    (Fault.html(503), wan.UpstreamError),
    (Fault.empty(500), wan.InternalServerError),
    (Fault.html(400), wan.BadRequestError),
])
async def test_non_json_error_pages_are_typed(
    server: FakeWanServer, fault: Fault, cls: type
) -> None:
    async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                  max_retries=0) as client:
        server.inject("credits", fault)
        with pytest.raises(cls) as info:
            await client.get_credits()
    assert info.value.code is None and isinstance(info.value.body, str)


async def test_truncated_json_success_is_retried_then_typed(server: FakeWanServer) -> None:
    async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                  retry=FAST_RETRY) as client:
        server.inject("get", Fault.truncated())
        task = await client.create_task(wan.TextToVideo(prompt="p"))
        assert (await client.get_task(task.id)).id == task.id  # retried past it
        server.inject("get", Fault.truncated(), times=6)
        with pytest.raises(wan.MalformedResponseError):
            await client.get_task(task.id)


# -- never pay twice ----------------------------------------------------------------------


async def test_reply_lost_after_the_task_was_made_is_ambiguous_and_not_resent(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    server.inject("create", Fault.drop_after())
    with pytest.raises(wan.AmbiguousSubmissionError) as info:
        await client.create_task(wan.TextToVideo(prompt="p"))
    err = info.value
    assert isinstance(err, wan.APIConnectionError)
    assert len(server.tasks) == 1 and len(creates(server)) == 1
    assert creates(server)[0].header("Idempotency-Key") == err.idempotency_key
    assert "may exist" in str(err) and err.idempotency_key in str(err)


async def test_500_on_create_is_ambiguous_and_also_an_internal_server_error(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    server.inject("create", Fault.error(500, "internal_error"))
    with pytest.raises(wan.InternalServerError) as info:
        await client.create_task(wan.TextToVideo(prompt="p"))
    assert isinstance(info.value, wan.AmbiguousSubmissionError)
    assert len(creates(server)) == 1


async def test_timeout_on_create_is_ambiguous(server: FakeWanServer) -> None:
    async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                  timeout=0.2) as client:
        server.inject("create", Fault.delay(1.0))
        with pytest.raises(wan.APITimeoutError) as info:
            await client.create_task(wan.TextToVideo(prompt="p"))
    assert isinstance(info.value, wan.AmbiguousSubmissionError)
    assert len(creates(server)) == 1


async def test_opt_in_resend_reuses_the_idempotency_key_and_makes_one_task(
    server: FakeWanServer,
) -> None:
    async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                  retry=FAST_RETRY, resend_ambiguous_creates=True) as client:
        server.inject("create", Fault.drop_after())
        task = await client.create_task(wan.TextToVideo(prompt="p"))
    sent = creates(server)
    assert len(sent) == 2
    assert sent[0].header("Idempotency-Key") == sent[1].header("Idempotency-Key")
    assert list(server.tasks) == [task.id]
    assert server.stats.creates_replayed == 1


async def test_explicit_resend_with_the_error_s_key_finds_the_same_task(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    request = wan.TextToVideo(prompt="p")
    server.inject("create", Fault.drop_after())
    with pytest.raises(wan.AmbiguousSubmissionError) as info:
        await client.create_task(request)
    task = await client.create_task(request, idempotency_key=info.value.idempotency_key)
    assert list(server.tasks) == [task.id]


async def test_connection_refused_before_sending_is_retried_for_creates() -> None:
    server = FakeWanServer(**FAST)
    await server.start()
    base, key = server.base_url, server.api_key
    await server.stop()  # nothing listens there now
    async with wan.AsyncWanClient(api_key=key, base_url=base,
                                  retry=wan.RetryPolicy(max_retries=2, initial_backoff=0.01)
                                  ) as client:
        with pytest.raises(wan.APIConnectionError) as info:
            await client.create_task(wan.TextToVideo(prompt="p"))
    # never sent, so certainly no task: not ambiguous
    assert not isinstance(info.value, wan.AmbiguousSubmissionError)


async def test_get_is_retried_after_a_dropped_connection(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    server.inject("credits", Fault.drop_before(), times=2)
    assert (await client.get_credits()).balance == server.balance
    assert len(server.requests) == 3


# -- the shared 429 gate -------------------------------------------------------------------


@pytest.mark.parametrize("header", ["1", "date"])
async def test_retry_after_is_honoured_in_seconds_and_as_a_date(
    client: wan.AsyncWanClient, server: FakeWanServer, header: str
) -> None:
    loop = asyncio.get_running_loop()
    value = header if header != "date" else formatdate(usegmt=True)  # 'now', whole seconds
    wait = 1.0 if header != "date" else 0.0
    server.inject("credits", Fault.error(429, "rate_limit_exceeded", retry_after=value))
    started = loop.time()
    await client.get_credits()
    elapsed = loop.time() - started
    assert wait <= elapsed < wait + 0.9


async def test_retry_after_longer_than_the_maximum_is_raised_not_slept(
    server: FakeWanServer,
) -> None:
    async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                  retry=wan.RetryPolicy(max_retry_after=5)) as client:
        server.inject("credits", Fault.error(429, "rate_limit_exceeded", retry_after="3600"))
        with pytest.raises(wan.RateLimitError) as info:
            await client.get_credits()
    assert info.value.retry_after == 3600


async def test_one_429_pauses_every_caller_once(server: FakeWanServer) -> None:
    limiter = wan.InProcessRateLimiter()
    async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                  rate_limiter=limiter, retry=FAST_RETRY) as client:
        server.inject("credits", Fault.error(429, "rate_limit_exceeded", retry_after="1"))
        first = asyncio.ensure_future(client.get_credits())
        while limiter.paused_until == 0:  # noqa: ASYNC110 - wait for the 429 to close the gate
            await asyncio.sleep(0.001)
        gate = limiter.paused_until
        n_before = len(server.requests)
        results = await asyncio.gather(first, *(client.get_credits() for _ in range(19)))
        assert len(results) == 20
        late = [r.time for r in server.requests[n_before:]]
        # no request of the client left while the gate was closed, none failed, one pause
        assert len(late) == 20
        assert min(late) >= gate - 0.005  # server and loop both use time.monotonic()
        assert limiter.pauses == 1
        assert server.stats.rate_limited == 0  # the scripted 429 is a fault, not the bucket


async def test_token_bucket_429s_pause_the_client_and_every_request_succeeds() -> None:
    async with FakeWanServer(rate_limit=TokenBucket(rate=20, burst=5, retry_after=1),
                             **FAST) as server:
        async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                      retry=wan.RetryPolicy(max_retries=10)) as client:
            loop = asyncio.get_running_loop()
            started = loop.time()
            results = await asyncio.gather(*(client.get_credits() for _ in range(30)))
            elapsed = loop.time() - started
    assert len(results) == 30
    assert server.stats.rate_limited >= 1
    assert elapsed >= 1.0  # the Retry-After was honoured


# -- key safety ---------------------------------------------------------------------------


def test_plain_http_to_a_remote_host_is_refused() -> None:
    with pytest.raises(wan.ConfigurationError, match="https"):
        wan.AsyncWanClient(api_key="sk-x", base_url="http://api.example.com")
    wan.AsyncWanClient(api_key="sk-x", base_url="http://api.example.com",
                       allow_insecure_http=True)
    wan.AsyncWanClient(api_key="sk-x", base_url="http://127.0.0.1:9")
    wan.AsyncWanClient(api_key="sk-x", base_url="http://[::1]:9")
    wan.AsyncWanClient(api_key="sk-x", base_url="http://localhost:9")


def test_missing_or_malformed_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WAN_API_KEY", raising=False)
    with pytest.raises(wan.ConfigurationError, match="WAN_API_KEY"):
        wan.AsyncWanClient()
    with pytest.raises(wan.ConfigurationError, match="sk-"):
        wan.AsyncWanClient(api_key="pk-123")
    monkeypatch.setenv("WAN_API_KEY", "sk-from-env")
    monkeypatch.setenv("WAN_BASE_URL", "http://127.0.0.1:1/")
    client = wan.AsyncWanClient()
    assert client.base_url == "http://127.0.0.1:1"
    assert "sk-from-env" not in repr(client)


async def test_redirects_are_not_followed_so_the_key_stays_home(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    async with FakeWanServer(**FAST) as elsewhere:
        server.inject("credits", Fault.redirect(f"{elsewhere.base_url}/v1/credits"))
        with pytest.raises(wan.APIError, match="redirect"):
            await client.get_credits()
        assert elsewhere.requests == []


async def test_the_key_never_appears_in_debug_logs(
    server: FakeWanServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                  retry=FAST_RETRY) as client:
        server.inject("credits", Fault.error(500, "internal_error"))
        await client.get_credits()
        task = await client.create_task(wan.TextToVideo(prompt="p"))
        await client.get_task(task.id)
    assert any(r.name == "wan26_async" for r in caplog.records)
    assert server.api_key not in caplog.text
    assert server.api_key[3:] not in caplog.text


async def test_reply_bodies_are_read_with_a_size_cap(server: FakeWanServer) -> None:
    async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                  max_response_bytes=100, retry=FAST_RETRY) as client:
        task = await client.create_task(wan.TextToVideo(prompt="p"))
        with pytest.raises(wan.MalformedResponseError, match="larger than 100"):
            await client.get_task(task.id)
    async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                  max_response_bytes=20) as client:
        # a create whose success reply cannot be read may have made its task
        with pytest.raises(wan.MalformedResponseError) as info:
            await client.create_task(wan.TextToVideo(prompt="p"))
        assert isinstance(info.value, wan.AmbiguousSubmissionError)
    assert len(server.tasks) == 2


async def test_a_5xx_retry_after_beyond_the_maximum_is_raised_not_slept(
    server: FakeWanServer,
) -> None:
    async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                  retry=wan.RetryPolicy(max_retry_after=5)) as client:
        server.inject("credits", Fault.error(503, "upstream_error", retry_after="3600"))
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(wan.UpstreamError):
            await client.get_credits()
        assert loop.time() - started < 1


async def test_create_task_keeps_the_create_reply_as_raw(
    client: wan.AsyncWanClient,
) -> None:
    task = await client.create_task(wan.TextToVideo(prompt="p"))
    assert task.raw == {"taskId": task.id}
    assert task.model == "wan-2.6-text-to-video"


async def test_a_limiter_passed_in_is_not_closed_with_the_client(
    server: FakeWanServer,
) -> None:
    shared = wan.InProcessRateLimiter()
    for _ in range(2):  # two clients in turn share one limiter
        async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                      rate_limiter=shared) as client:
            await client.get_credits()


# -- lifecycle ----------------------------------------------------------------------------


async def test_closing_leaves_no_unclosed_session_warnings(server: FakeWanServer) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client = wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url)
        await client.get_credits()
        await client.aclose()
        await client.aclose()  # idempotent
        del client
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert not any("Unclosed" in str(w.message) for w in caught)


async def test_a_borrowed_session_is_left_open(server: FakeWanServer) -> None:
    async with aiohttp.ClientSession() as session:
        async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                      session=session) as client:
            await client.get_credits()
        assert not session.closed
        async with session.get(f"{server.base_url}/v1/credits") as resp:
            assert resp.status == 401  # the session itself carries no key


async def test_max_concurrency_bounds_requests_in_flight(server: FakeWanServer) -> None:
    # Each reply is held 0.2 s, so the six calls queue behind three slots; the emulator
    # counts the requests it is handling at once (it ends a request's handling before
    # the client has read the reply, so its count never exceeds the client's).
    async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                  max_concurrency=3) as client:
        server.inject("credits", Fault.delay(0.2), times=6)
        results = await asyncio.gather(*(client.get_credits() for _ in range(6)))
    assert len(results) == 6 and server.stats.requests == 6
    assert server.stats.max_in_flight == 3  # the bound is reached and never passed
