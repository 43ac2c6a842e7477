"""Property tests (hypothesis): request rules against an oracle written from the spec,
payload round trips, parsers that only ever raise the SDK's own errors, and the retry,
poll and Retry-After schedules within their bounds.

Inputs that hit a bug already recorded in ``tests/chaos/test_found_bugs.py`` are left
out here with ``assume`` (each such spot names the test that keeps the bug visible), so
this file stays green while the bug is open.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import random
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

import wan26_async as wan
from wan26_async._decode import decode_json, error_from_reply, parse_retry_after, unwrap_envelope
from wan26_async._parse import parse_credits, parse_task

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

T2V, I2V, R2V = wan.TextToVideo, wan.ImageToVideo, wan.ReferenceToVideo

# -- the oracle: the spec's rules, read from wan26-api.txt, independent of the SDK --------

SPEC_MAX_PROMPT = 1500  # "Text prompt, max 1500 characters"
SPEC_MAX_NEGATIVE = 500  # "Negative prompt, max 500 characters"
SPEC_MAX_SEED = 2147483647  # "Integer between 0 and 2147483647"
SPEC_RESOLUTIONS = ("720p", "1080p")  # "720p or 1080p"
SPEC_SHOTS = ("single", "multi")  # "single or multi"
SPEC_RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4")  # "16:9, 9:16, 1:1, 4:3, or 3:4"
SPEC_DURATION = {T2V: (2, 15), I2V: (2, 15), R2V: (2, 10)}  # "2-15" / "2-10 seconds"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _spec_url(value: object) -> bool:
    """A public HTTP(S) URL: an http or https scheme (any case), a host, no whitespace.
    Base64 and data: URLs are not URLs of that kind."""
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        return False
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(host)


def oracle(cls: type[wan.VideoRequest], kw: Mapping[str, Any]) -> set[str]:
    """The fields that break a rule of the spec (empty: the request is valid). A key
    missing from ``kw``, or None, is a field left unset."""
    bad: set[str] = set()
    get = kw.get
    prompt = get("prompt")  # "Required": missing, or nothing but blanks, is not a prompt
    if not (isinstance(prompt, str) and prompt.strip() and len(prompt) <= SPEC_MAX_PROMPT):
        bad.add("prompt")
    negative = get("negative_prompt")
    if negative is not None and not (isinstance(negative, str)
                                     and len(negative) <= SPEC_MAX_NEGATIVE):
        bad.add("negative_prompt")
    for field, allowed in (("resolution", SPEC_RESOLUTIONS), ("shot_type", SPEC_SHOTS)):
        value = get(field)
        if value is not None and not (isinstance(value, str) and value in allowed):
            bad.add(field)
    for field in ("prompt_extend", "watermark"):
        if get(field) is not None and not isinstance(get(field), bool):
            bad.add(field)
    seed = get("seed")
    if seed is not None and not (_is_int(seed) and 0 <= seed <= SPEC_MAX_SEED):
        bad.add("seed")
    if get("shot_type") == "multi" and get("prompt_extend") is False:
        bad |= {"shot_type", "prompt_extend"}  # "multi requires prompt_extend to be true"
    low, high = SPEC_DURATION[cls]
    duration = get("duration")
    if duration is not None and not (_is_int(duration) and low <= duration <= high):
        bad.add("duration")
    if cls in (T2V, R2V):
        ratio = get("aspect_ratio")
        if ratio is not None and not (isinstance(ratio, str) and ratio in SPEC_RATIOS):
            bad.add("aspect_ratio")
    if cls in (I2V, R2V) and get("audio") is not None and not isinstance(get("audio"), bool):
        bad.add("audio")

    def urls(field: str) -> int | None:
        """The list's length; None (and the field marked bad) when it is not a URL list."""
        value = get(field)
        if value is None:
            return 0
        if not isinstance(value, list | tuple) or not all(_spec_url(u) for u in value):
            bad.add(field)
            return None
        return len(value)

    if cls in (T2V, I2V):
        urls("audio_urls")
    if cls is I2V and (get("image_urls") is None or urls("image_urls") not in (1, None)):
        bad.add("image_urls")  # "Exactly 1 public HTTP(S) image URL", required
    if cls is R2V:  # "max 5" / "max 3"; "at least one ... combined count cannot exceed 5"
        images, videos = urls("image_urls"), urls("video_urls")
        if images is not None and images > 5:
            bad.add("image_urls")
        if videos is not None and videos > 3:
            bad.add("video_urls")
        if images is not None and videos is not None and not 1 <= images + videos <= 5:
            bad |= {"image_urls", "video_urls"}
    return bad


# -- inputs at the edges ----------------------------------------------------------------

GOOD_URLS = ["https://example.com/a.png", "http://cdn.example.org/v/b.mp4?sig=1#t",
             "HTTPS://EXAMPLE.COM/C.PNG", "https://127.0.0.1:8443/x"]
BAD_URLS = ["ftp://example.com/a.png", "file:///etc/passwd", "javascript:alert(1)",
            "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4",
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA",
            "example.com/a.png", "//example.com/a.png", "https://", "http:///path", "", 5,
            None, b"https://example.com/a.png"]
# Accepted by the SDK although the spec refuses them (test_found_bugs: hostless and
# whitespace URLs), or refused with a plain ValueError (invalid IPv6 literal).
KNOWN_BUG_URLS = ["https://:443/a.png", "http://user@/a.png", "https://exa mple.com/a.png",
                  "https://example.com/a\tb.png", "http://[oops/a.png"]

odd_url = st.one_of(st.sampled_from(BAD_URLS), st.sampled_from(KNOWN_BUG_URLS))
one_odd = st.tuples(st.lists(st.sampled_from(GOOD_URLS), max_size=4), odd_url,
                    st.integers(0, 4)).map(lambda t: [*t[0][: t[2]], t[1], *t[0][t[2]:]])
url_list = st.one_of(
    st.none(),
    st.lists(st.sampled_from(GOOD_URLS), max_size=7),  # counts around every limit
    one_odd,  # one near-miss among good ones
    one_odd,
    st.lists(st.sampled_from(GOOD_URLS), max_size=7).map(tuple),
    st.sampled_from(GOOD_URLS),  # a bare string is not a list
)


def _chars(lengths: list[int]) -> st.SearchStrategy[str]:
    return st.sampled_from(lengths).flatmap(
        lambda n: st.sampled_from(["x", "é", "字", " "]).map(lambda c: c * n))


prompts = st.one_of(_chars([0, 1, 2, 1499, 1500, 1501, 1600]), st.text(max_size=30),
                    st.just("  \n\t "), st.integers(), st.none())
negatives = st.one_of(_chars([0, 1, 499, 500, 501]), st.text(max_size=10), st.none(),
                      st.integers())
resolutions = st.sampled_from(["720p", "1080p", wan.Resolution.P720, wan.Resolution.P1080,
                               "720P", "1080", "720", "4k", "", " 720p", "720p ", 720, None])
ratios = st.sampled_from(["16:9", "9:16", "1:1", "4:3", "3:4", wan.AspectRatio.RATIO_1_1,
                          "16:10", "21:9", "16x9", "9:16 ", "1:1.0", "", 1.78, None])
shots = st.sampled_from(["single", "multi", wan.ShotType.MULTI, wan.ShotType.SINGLE, "Multi",
                         "double", "", None])
booleans = st.sampled_from([True, False, None, 0, 1, "true", "false"])
seeds = st.one_of(st.sampled_from([-1, 0, 1, 2**31 - 2, 2**31 - 1, 2**31, 2**63, True, False,
                                   1.0, "7", None]), st.integers())
durations = st.one_of(st.integers(-1, 17), st.sampled_from([True, False, 5.0, "5", None]))

COMMON = {"negative_prompt": negatives, "resolution": resolutions, "shot_type": shots,
          "prompt_extend": booleans, "watermark": booleans, "seed": seeds,
          "duration": durations}
PER_MODEL: dict[type[wan.VideoRequest], dict[str, st.SearchStrategy[Any]]] = {
    T2V: {"aspect_ratio": ratios, "audio_urls": url_list},
    I2V: {"image_urls": url_list, "audio_urls": url_list, "audio": booleans},
    R2V: {"image_urls": url_list, "video_urls": url_list, "aspect_ratio": ratios,
          "audio": booleans},
}


valid_text = st.text(min_size=1, max_size=40).filter(lambda s: bool(s.strip()))
valid_common = {
    "negative_prompt": st.text(max_size=SPEC_MAX_NEGATIVE),
    "resolution": st.sampled_from([*SPEC_RESOLUTIONS, *wan.Resolution]),
    "prompt_extend": st.booleans(),
    "watermark": st.booleans(),
    "seed": st.integers(0, SPEC_MAX_SEED),
}
good_urls = st.sampled_from(GOOD_URLS)
ALL_FIELDS = {f.name for cls in (T2V, I2V, R2V) for f in attrs.fields(cls)}
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
extras = st.dictionaries(
    st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).filter(
        lambda k: k not in ALL_FIELDS), json_values, max_size=3)


def valid_kwargs(cls: type[wan.VideoRequest]) -> st.SearchStrategy[dict[str, Any]]:
    """The fields of a request the spec allows (with extra_input for unmodeled ones)."""
    common = {**valid_common, "duration": st.integers(2, 10 if cls is R2V else 15),
              "shot_type": st.sampled_from([*SPEC_SHOTS, *wan.ShotType]),
              "extra_input": extras}
    ratio = {"aspect_ratio": st.sampled_from([*SPEC_RATIOS, *wan.AspectRatio])}
    if cls is T2V:
        strategy = st.fixed_dictionaries({"prompt": valid_text}, optional={
            **common, **ratio, "audio_urls": st.lists(good_urls, max_size=3)})
    elif cls is I2V:
        strategy = st.fixed_dictionaries(
            {"prompt": valid_text, "image_urls": st.lists(good_urls, min_size=1, max_size=1)},
            optional={**common, "audio_urls": st.lists(good_urls, max_size=3),
                      "audio": st.booleans()})
    else:
        references = st.integers(0, 5).flatmap(lambda n: st.tuples(
            st.lists(good_urls, min_size=n, max_size=n),
            st.lists(good_urls, min_size=0 if n else 1, max_size=min(3, 5 - n))))
        strategy = st.tuples(references, st.fixed_dictionaries(
            {"prompt": valid_text}, optional={**common, **ratio, "audio": st.booleans()},
        )).map(lambda r: {**r[1], "image_urls": r[0][0], "video_urls": r[0][1]})
    return strategy.map(_no_multi)


def valid_requests() -> st.SearchStrategy[wan.VideoRequest]:
    return st.sampled_from([T2V, I2V, R2V]).flatmap(
        lambda cls: valid_kwargs(cls).map(lambda kw: cls(**kw)))


def _no_multi(kw: dict[str, Any]) -> dict[str, Any]:
    if kw.get("shot_type") == "multi" and kw.get("prompt_extend") is False:
        kw["prompt_extend"] = True
    return kw



@st.composite
def kwargs_for(draw: st.DrawFn, cls: type[wan.VideoRequest]) -> dict[str, Any]:
    """A valid request's fields with 1-3 of them set to an edge value (valid or not) or
    unset: most draws sit next to a boundary of one rule."""
    kw = draw(valid_kwargs(cls))
    kw.pop("extra_input", None)
    edges = {"prompt": prompts, **COMMON, **PER_MODEL[cls]}
    fields = draw(st.lists(st.sampled_from(sorted(edges)), min_size=1, max_size=3,
                           unique=True))
    url_fields = sorted(f for f in edges if f.endswith("_urls"))
    if draw(st.integers(0, 2)) == 0:  # URL lists get a near-miss more often
        fields.append(draw(st.sampled_from(url_fields)))
    for field in fields:
        if draw(st.integers(0, 5)) == 0:
            kw.pop(field, None)
        else:
            kw[field] = draw(edges[field])
    return kw


any_request_kwargs = st.sampled_from([T2V, I2V, R2V]).flatmap(
    lambda cls: st.tuples(st.just(cls), kwargs_for(cls)))


@SETTINGS
@given(any_request_kwargs)
@example((T2V, {"prompt": "x" * 1500}))
@example((T2V, {"prompt": "x" * 1501}))
@example((R2V, {"prompt": "p", "image_urls": GOOD_URLS[:3], "video_urls": GOOD_URLS[:3]}))
@example((I2V, {"prompt": "p", "image_urls": [BAD_URLS[3]]}))
@example((T2V, {"prompt": "p", "seed": 2**31 - 1, "duration": 15}))
@example((R2V, {"prompt": "p", "video_urls": GOOD_URLS[:1], "duration": 11}))
@example((T2V, {"prompt": "p", "shot_type": "multi", "prompt_extend": False}))
def test_construction_succeeds_exactly_when_the_spec_allows(
    case: tuple[type[wan.VideoRequest], dict[str, Any]],
) -> None:
    check_verdict(*case)


def url_kwargs(cls: type[wan.VideoRequest]) -> st.SearchStrategy[dict[str, Any]]:
    fields = {name: url_list for name in PER_MODEL[cls] if name.endswith("_urls")}
    return st.fixed_dictionaries({"prompt": st.just("p")}, optional=fields)


@SETTINGS
@given(st.sampled_from([T2V, I2V, R2V]).flatmap(
    lambda cls: st.tuples(st.just(cls), url_kwargs(cls))))
@example((I2V, {"prompt": "p", "image_urls": ["data:image/png;base64,iVBORw0KGgo="]}))
@example((R2V, {"prompt": "p", "image_urls": [], "video_urls": []}))
@example((R2V, {"prompt": "p", "image_urls": GOOD_URLS[:1] * 5, "video_urls": []}))
@example((R2V, {"prompt": "p", "video_urls": GOOD_URLS[:1] * 4}))
def test_url_lists_are_checked_as_the_spec_says(
    case: tuple[type[wan.VideoRequest], dict[str, Any]],
) -> None:
    check_verdict(*case)


def check_verdict(cls: type[wan.VideoRequest], kw: dict[str, Any]) -> None:
    """Construction succeeds iff the oracle finds no broken rule; a refusal is a
    ValidationError naming one of the broken fields."""
    bad = oracle(cls, kw)
    event("valid" if not bad else "invalid")
    try:
        request = cls(**kw)
    except wan.ValidationError as err:
        assert bad, f"refused a valid request: {err}"
        named = {part.split("[")[0] for part in err.field.split("/")}
        assert named & bad, f"error names {err.field!r}; the broken rules are {sorted(bad)}"
        assert err.field in str(err)
        return
    assert not bad, f"accepted a request breaking {sorted(bad)}: {request!r}"


# -- payloads round-trip ------------------------------------------------------------------

@SETTINGS
@given(valid_requests())
def test_unstructure_then_structure_round_trips(request: wan.VideoRequest) -> None:
    payload = request.to_payload()
    modeled = {k: v for k, v in payload["input"].items() if k not in request.extra_input}
    # given as a dict, unmodeled fields are named on purpose, beside "input"
    body = {**payload, "input": modeled, "extra_input": dict(request.extra_input)}
    assert wan.request_from_dict(body) == request
    # and through JSON, as a batch file or a fan_out body would carry it
    assert wan.request_from_dict(json.loads(json.dumps(body))) == request
    assert None not in modeled.values()  # unset fields are not sent


# -- parsers raise nothing but WanError -----------------------------------------------------

# Finite numbers only: NaN/Infinity (and 1e999, which Python reads as inf) in "progress"
# crash parse_task (test_found_bugs::test_a_non_finite_progress_is_not_a_crash).
finite_json = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.text(max_size=10), inner, max_size=5)),
    max_leaves=30)
TASK_KEYS = ["taskId", "task_id", "id", "status", "state", "taskStatus", "task_status",
             "progress", "model", "output", "video_url", "videoUrl", "video_urls", "result",
             "results", "videos", "video", "url", "error", "failure", "fail_reason",
             "message", "code", "msg", "data", "balance", "credits", "remaining", "available",
             "amount"]
STATUS_WORDS = st.sampled_from(["pending", "processing", "completed", "failed", "COMPLETED",
                                " Failed ", "queued", "", "unknown"])
task_like_value = st.one_of(finite_json, STATUS_WORDS, good_urls,
                            st.lists(st.one_of(good_urls, finite_json), max_size=3))
task_like = st.dictionaries(st.sampled_from(TASK_KEYS), task_like_value, max_size=8)
task_like_nested = st.recursive(
    task_like, lambda inner: st.dictionaries(st.sampled_from(TASK_KEYS),
                                             st.one_of(inner, task_like_value), max_size=6),
    max_leaves=10)
objects = st.one_of(task_like_nested, st.dictionaries(st.text(max_size=10), finite_json,
                                                      max_size=6))
statuses = st.integers(100, 599)
headers = st.dictionaries(st.sampled_from(["X-Request-Id", "request-id", "Retry-After",
                                           "Content-Type", "x-trace-id"]) | st.text(max_size=8),
                          st.text(max_size=20), max_size=4)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


any_bytes = st.one_of(
    st.binary(max_size=300),
    finite_json.map(_json_bytes),
    objects.map(_json_bytes),
    objects.map(lambda o: _json_bytes(o)[: max(0, len(_json_bytes(o)) // 2)]),  # truncated
    objects.map(lambda o: _json_bytes({"code": 200, "msg": "success", "data": o})),
    st.text(max_size=100).map(lambda t: f"<html><body>{t}</body></html>".encode()),
    st.text(max_size=50).map(lambda t: t.encode("utf-16")),
)


@SETTINGS
@given(objects, st.one_of(st.none(), st.text(min_size=1, max_size=8)))
def test_parse_task_gives_a_task_or_a_wan_error(data: dict[str, Any], task_id: str | None) -> None:
    try:
        task = parse_task(data, task_id)
    except wan.WanError:
        return
    assert isinstance(task, wan.Task) and isinstance(task.status, wan.TaskStatus)
    assert task.id and (task.video_url is None or task.status is wan.TaskStatus.COMPLETED)


@SETTINGS
@given(objects, statuses, headers)
def test_parse_credits_gives_credits_or_a_wan_error(
    data: dict[str, Any], status: int, hdrs: dict[str, str]
) -> None:
    try:
        credits = parse_credits(data, status, hdrs)
    except wan.WanError:
        return
    assert isinstance(credits, wan.Credits)
    assert isinstance(credits.balance, int | float) and not isinstance(credits.balance, bool)


@SETTINGS
@given(st.one_of(finite_json, objects), statuses, headers)
def test_unwrap_envelope_gives_a_dict_or_a_wan_error(
    decoded: Any, status: int, hdrs: dict[str, str]
) -> None:
    try:
        data = unwrap_envelope(decoded, status, hdrs)
    except wan.WanError:
        return
    assert isinstance(data, dict)


@SETTINGS
@given(any_bytes, statuses, headers)
def test_the_whole_reply_pipeline_raises_only_wan_errors(
    body: bytes, status: int, hdrs: dict[str, str]
) -> None:
    """decode_json -> unwrap_envelope -> parse_task / parse_credits, as the transport
    reads a 2xx reply."""
    for parse in (lambda d: parse_task(d, "t"), lambda d: parse_credits(d, status, hdrs)):
        with contextlib.suppress(wan.WanError):
            parse(unwrap_envelope(decode_json(body, status, hdrs), status, hdrs))


@SETTINGS
@given(any_bytes, statuses, headers, st.one_of(st.none(), st.floats(0, 1e6)))
@example(b"", 502, {}, None)
@example(b"<html>502 Bad Gateway</html>", 502, {}, None)
@example(b'{"error": {"code": "rate_limit_exceeded"}}', 400, {}, 1.0)
@example(b'{"error": {"code": 5, "message": [1]}}', 429, {"X-Request-Id": "r"}, None)
def test_error_from_reply_never_raises_and_returns_an_api_error(
    body: bytes, status: int, hdrs: dict[str, str], retry_after: float | None
) -> None:
    err = error_from_reply(status, body, hdrs, retry_after=retry_after)
    assert isinstance(err, wan.APIError) and err.status_code == status
    assert isinstance(str(err), str) and isinstance(err.message, str)
    if isinstance(err, wan.RateLimitError):
        assert err.retry_after == retry_after
    if status >= 500 and not isinstance(err, wan.RateLimitError | wan.SpendLimitError):
        assert isinstance(err, wan.InternalServerError | wan.UpstreamError | wan.APIError)


# -- schedules within their bounds ---------------------------------------------------------

positive = st.floats(min_value=0.0, max_value=60.0, allow_nan=False)


@SETTINGS
@given(positive, positive, st.floats(1.0, 4.0), st.integers(0, 64), st.integers(0, 2**32))
@example(0.5, 8.0, 2.0, 0, 0)
@example(0.5, 8.0, 2.0, 64, 1)
def test_retry_backoff_stays_between_zero_and_its_bound(
    initial: float, cap: float, multiplier: float, attempt: int, seed: int
) -> None:
    # attempts beyond ~1000 overflow: test_found_bugs::test_a_late_retry_backoff_is_capped
    policy = wan.RetryPolicy(initial_backoff=initial, max_backoff=cap, multiplier=multiplier)
    bound = min(cap, initial * multiplier**attempt)
    delay = policy.backoff(attempt, rng=random.Random(seed))
    assert 0.0 <= delay <= bound * (1 + 1e-12)


@SETTINGS
@given(st.floats(0.001, 30.0), st.floats(1.0, 3.0), st.floats(0.001, 120.0),
       st.floats(0.0, 1.0), st.integers(0, 10_000), st.integers(0, 2**32))
@example(2.0, 2.0, 15.0, 0.1, 0, 0)
@example(2.0, 2.0, 15.0, 0.1, 10_000, 0)
def test_poll_interval_stays_within_its_jitter(
    initial: float, multiplier: float, cap: float, jitter: float, poll: int, seed: int
) -> None:
    policy = wan.PollPolicy(initial=initial, multiplier=multiplier, max_interval=cap,
                            jitter=jitter)
    # The documented schedule: initial * multiplier**poll, up to max_interval (in logs, so
    # no overflow). Growth stops at poll 64 in the SDK: only compared where that is moot
    # (test_found_bugs::test_slow_poll_backoff_still_reaches_max_interval).
    exponent = math.log(initial) + poll * math.log(multiplier)
    base = cap if exponent >= math.log(cap) else min(cap, math.exp(exponent))
    value = policy.interval(poll, rng=random.Random(seed))
    low, high = base * (1 - jitter), base * (1 + jitter)
    assert low * (1 - 1e-9) - 1e-12 <= value <= high * (1 + 1e-9) + 1e-12


NOW = 1_780_000_000  # a fixed "now", whole seconds, so dates compare exactly


@SETTINGS
@given(st.integers(0, 10**7), st.sampled_from(["", " ", "\t"]))
def test_retry_after_seconds_are_taken_as_given(seconds: int, pad: str) -> None:
    assert parse_retry_after(f"{pad}{seconds}{pad}", now=NOW) == float(seconds)


@SETTINGS
@given(st.integers(-10**6, 10**7), st.booleans())
def test_retry_after_http_dates_give_the_delta_or_zero(delta: int, rfc850: bool) -> None:
    when = NOW + delta
    if rfc850:  # the obsolete form HTTP still allows: Sunday, 06-Nov-94 08:49:37 GMT
        value = time.strftime("%A, %d-%b-%y %H:%M:%S GMT", time.gmtime(when))
        assume(1970 <= time.gmtime(when).tm_year <= 2068)  # two-digit years
    else:
        value = email.utils.formatdate(when, usegmt=True)  # IMF-fixdate
    assert parse_retry_after(value, now=NOW) == max(0.0, float(delta))


@SETTINGS
@given(st.text(max_size=40))
@example("nan")
@example("-inf")
@example("Infinity")
@example("soon")
@example("Mon, 32 Foo 2026 25:61:61 GMT")
def test_retry_after_is_none_or_non_negative_and_none_without_digits(value: str) -> None:
    result = parse_retry_after(value, now=NOW)
    assert result is None or (result >= 0 and math.isfinite(result))
    if not any(c.isdigit() for c in value):
        assert result is None
