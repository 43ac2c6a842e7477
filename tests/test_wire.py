"""Reading replies tolerantly, mapping errors, and wire details (aioresponses)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aioresponses import aioresponses
from multidict import CIMultiDict

import wan26_async as wan
from wan26_async._decode import error_from_reply, parse_retry_after, unwrap_envelope
from wan26_async._parse import parse_credits, parse_task

BASE = "https://api.example.test"
KEY = "sk-unit-0000000000000000"


# -- task replies -----------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    {"taskId": "t1", "status": "completed", "output": {"video_url": "https://cdn/x.mp4"}},
    {"task_id": "t1", "status": "COMPLETED", "video_url": "https://cdn/x.mp4"},
    {"id": "t1", "status": "Completed", "result": ["https://cdn/x.mp4"]},
    {"taskId": "t1", "status": "completed", "result": {"url": "https://cdn/x.mp4"}},
    {"taskId": "t1", "status": "completed", "output": {"video_urls": ["https://cdn/x.mp4"]}},
    {"taskId": "t1", "state": "completed", "videos": [{"url": "https://cdn/x.mp4"}]},
])
def test_task_replies_are_read_where_gateways_put_things(data: dict[str, Any]) -> None:
    task = parse_task(data)
    assert task.id == "t1"
    assert task.status is wan.TaskStatus.COMPLETED
    assert task.video_url == "https://cdn/x.mp4"
    assert task.raw == data


def test_failed_task_carries_the_reason() -> None:
    task = parse_task({"taskId": "t", "status": "failed",
                       "error": {"code": "upstream_error", "message": "refused"}})
    assert (task.status, task.error, task.error_code) == (wan.TaskStatus.FAILED, "refused",
                                                          "upstream_error")
    assert parse_task({"taskId": "t", "status": "failed", "failReason": "nsfw"}).error == "nsfw"


def test_unknown_status_does_not_crash_and_keeps_the_text() -> None:
    task = parse_task({"taskId": "t", "status": "queued_for_review"})
    assert task.status is wan.TaskStatus.UNKNOWN
    assert task.status_text == "queued_for_review"
    assert not task.done
    assert parse_task({"taskId": "t"}).status is wan.TaskStatus.UNKNOWN


def test_a_bare_failed_task_with_an_error_field_is_data_not_an_error_reply() -> None:
    bare = {"taskId": "t", "status": "failed", "error": {"code": "upstream_error",
                                                         "message": "refused"}}
    task = parse_task(unwrap_envelope(bare, 200, {}))
    assert task.status is wan.TaskStatus.FAILED and task.error == "refused"


def test_an_error_envelope_in_http_200_takes_the_status_of_its_code() -> None:
    with pytest.raises(wan.InternalServerError) as info:
        unwrap_envelope({"error": {"code": "internal_error", "message": "m"}}, 200, {})
    assert info.value.status_code == 500


def test_task_id_falls_back_to_the_one_asked_for() -> None:
    assert parse_task({"status": "pending"}, "asked").id == "asked"


@pytest.mark.parametrize(("data", "balance"), [
    ({"balance": 120}, 120), ({"credits": "99.5"}, 99.5), ({"remaining": 7}, 7),
    ({"credits": {"balance": 3}}, 3),
])
def test_credits_replies(data: dict[str, Any], balance: float) -> None:
    assert parse_credits(data, 200, {}).balance == balance


def test_credits_without_a_balance_is_malformed() -> None:
    with pytest.raises(wan.MalformedResponseError):
        parse_credits({"foo": 1}, 200, {})


def test_envelope_with_an_error_code_maps_to_the_error_even_on_http_200() -> None:
    with pytest.raises(wan.InsufficientCreditsError):
        unwrap_envelope({"error": {"code": "insufficient_credits", "message": "top up"}}, 200, {})
    with pytest.raises(wan.BadRequestError):
        unwrap_envelope({"code": 400, "msg": "bad", "data": None}, 200, {})
    assert unwrap_envelope({"code": 200, "msg": "success", "data": {"a": 1}}, 200, {}) == {"a": 1}
    assert unwrap_envelope({"taskId": "x"}, 200, {}) == {"taskId": "x"}
    with pytest.raises(wan.MalformedResponseError):
        unwrap_envelope([1, 2], 200, {})


# -- error replies ----------------------------------------------------------------------

SPEC_ERRORS = [
    (400, "invalid_request", "invalid_request_error", wan.BadRequestError),
    (401, "invalid_api_key", "authentication_error", wan.AuthenticationError),
    (402, "insufficient_credits", "billing_error", wan.InsufficientCreditsError),
    (403, "ip_not_allowed", "permission_error", wan.PermissionDeniedError),
    (404, "model_not_found", "invalid_request_error", wan.ModelNotFoundError),
    (404, "task_not_found", "invalid_request_error", wan.TaskNotFoundError),
    (429, "rate_limit_exceeded", "rate_limit_error", wan.RateLimitError),
    (429, "spend_limit_exceeded", "billing_error", wan.SpendLimitError),
    (500, "internal_error", "api_error", wan.InternalServerError),
    (503, "upstream_error", "upstream_error", wan.UpstreamError),
]


@pytest.mark.parametrize(("status", "code", "etype", "cls"), SPEC_ERRORS)
def test_error_envelope_maps_by_code(status: int, code: str, etype: str, cls: type) -> None:
    body = json.dumps({"error": {"code": code, "message": "m", "type": etype}}).encode()
    err = error_from_reply(status, body, CIMultiDict({"X-Request-Id": "req_1"}))
    assert type(err) is cls
    assert (err.status_code, err.code, err.type, err.request_id) == (status, code, etype, "req_1")
    assert err.message.startswith("m")
    assert isinstance(err.body, dict)
    assert err.headers["X-Request-Id"] == "req_1"


@pytest.mark.parametrize(("status", "cls"), [
    (400, wan.BadRequestError), (401, wan.AuthenticationError), (404, wan.NotFoundError),
    (429, wan.RateLimitError), (500, wan.InternalServerError), (502, wan.InternalServerError),
    (503, wan.UpstreamError), (418, wan.APIError),
])
@pytest.mark.parametrize("body", [
    b"<html><body><h1>502 Bad Gateway</h1></body></html>", b"", b'{"error": {"code": "inte',
    b"\xff\xfe\x00garbage",
])
def test_non_json_error_bodies_map_by_status_and_keep_the_text(
    status: int, cls: type, body: bytes
) -> None:
    err = error_from_reply(status, body, {})
    assert type(err) is cls
    assert err.status_code == status and err.code is None
    assert isinstance(err.body, str)
    if body.startswith(b"<html>"):
        assert "Bad Gateway" in str(err)


def test_huge_html_error_body_is_cut() -> None:
    err = error_from_reply(502, b"<html>" + b"x" * 100_000, {})
    assert isinstance(err.body, str) and len(err.body) <= 2000


@pytest.mark.parametrize(("value", "expected"), [
    ("3", 3.0), ("0.5", 0.5), ("-2", 0.0), ("soon", None), (None, None),
    ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
])
def test_retry_after_seconds_and_http_dates(value: str | None, expected: float | None) -> None:
    now = 1445412480.0  # 10 s before the date above
    assert parse_retry_after(value, now=now) == expected


# -- wire details with aioresponses -------------------------------------------------------


def _client(**kw: Any) -> wan.AsyncWanClient:
    return wan.AsyncWanClient(api_key=KEY, base_url=BASE, **kw)


async def test_create_sends_json_auth_and_an_idempotency_key() -> None:
    with aioresponses() as mock:
        mock.post(f"{BASE}/v1/videos/generations",
                  payload={"code": 200, "msg": "success", "data": {"taskId": "abc"}})
        async with _client() as client:
            task = await client.create_task(wan.TextToVideo(prompt="hi", duration=3),
                                            callback_url="https://hooks.test/w")
        assert task.id == "abc" and task.status is wan.TaskStatus.PENDING
        (call,) = mock.requests[("POST", next(iter(mock.requests))[1])]
        headers = call.kwargs["headers"]
        assert headers["Authorization"] == f"Bearer {KEY}"
        assert headers["Content-Type"] == "application/json"
        assert re.fullmatch(r"[0-9a-f-]{36}", headers["Idempotency-Key"])
        assert json.loads(call.kwargs["data"]) == {
            "model": "wan-2.6-text-to-video", "callback_url": "https://hooks.test/w",
            "input": {"prompt": "hi", "duration": 3},
        }
        assert call.kwargs["allow_redirects"] is False


async def test_task_ids_are_escaped_into_the_path() -> None:
    with aioresponses() as mock:
        mock.get(re.compile(r".*"), payload={"code": 200, "data": {"status": "pending"}})
        async with _client() as client:
            task = await client.get_task("../credits")
        ((_method, url),) = mock.requests
        assert str(url) == f"{BASE}/v1/tasks/..%2Fcredits"
        assert task.id == "../credits"


async def test_a_truncated_success_reply_is_a_typed_error_after_retries() -> None:
    with aioresponses() as mock:
        for _ in range(3):
            mock.get(f"{BASE}/v1/credits", body='{"code": 200, "data": {"bal', status=200)
        async with _client(retry=wan.RetryPolicy(max_retries=2, initial_backoff=0)) as client:
            with pytest.raises(wan.MalformedResponseError) as info:
                await client.get_credits()
        assert "not valid JSON" in str(info.value)
        assert len(next(iter(mock.requests.values()))) == 3
