"""Request bodies given as dicts (``fan_out`` items, batch lines) are checked like the
request classes: a typo is refused, naming the key and the field it resembles, before
anything is sent or charged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import wan26_async as wan
from wan26_async._jobs import BatchError, load_jobs
from wan26_async.testing import FakeWanServer

T2V = "wan-2.6-text-to-video"
IMAGE = "https://example.com/first-frame.png"


def creates(server: FakeWanServer) -> list[Any]:
    return [r for r in server.requests if r.route == "create"]


def refused(payload: Any) -> wan.ValidationError:
    with pytest.raises(wan.ValidationError) as info:
        wan.request_from_dict(payload)
    return info.value


def test_the_dict_function_is_public() -> None:
    assert "request_from_dict" in wan.__all__
    request = wan.request_from_dict({"model": T2V, "input": {"prompt": "p", "duration": 2}})
    assert request == wan.TextToVideo(prompt="p", duration=2)
    assert request.estimated_credits == 80


def test_a_misspelled_input_key_is_refused_naming_the_key_and_the_field_it_resembles(
) -> None:
    err = refused({"model": T2V, "input": {"prompt": "p", "durations": 2}})
    assert err.field == "input['durations']"
    assert err.model == T2V and err.value == 2
    assert "did you mean 'duration'?" in str(err)
    assert '"extra_input"' in str(err)  # says how to send an unmodeled field on purpose


@pytest.mark.parametrize(("key", "nearest"), [
    ("resolutoin", "resolution"), ("negative-prompt", "negative_prompt"),
    ("image_url", "image_urls"), ("Seed", "seed"),
])
def test_the_nearest_known_field_is_suggested(key: str, nearest: str) -> None:
    err = refused({"model": "i2v", "input": {"prompt": "p", "image_urls": [IMAGE], key: 1}})
    assert f"did you mean {nearest!r}?" in str(err)


def test_a_field_of_another_model_says_which_model_has_it() -> None:
    err = refused({"model": T2V, "input": {"prompt": "p", "image_urls": [IMAGE]}})
    assert "ImageToVideo and ReferenceToVideo" in str(err)
    err = refused({"model": "i2v", "input": {"prompt": "p", "image_urls": [IMAGE],
                                             "aspect_ratio": "1:1"}})
    assert err.field == "input['aspect_ratio']"


def test_a_key_without_any_resemblance_lists_the_known_fields() -> None:
    err = refused({"model": T2V, "input": {"prompt": "p", "zzz": 1}})
    assert "known: aspect_ratio, audio_urls, duration" in str(err)


@pytest.mark.parametrize(("payload", "field", "hint"), [
    ({"model": T2V, "inputs": {"prompt": "p"}}, "inputs", "did you mean 'input'?"),
    ({"model": T2V, "input": {"prompt": "p"}, "prompt": "q"}, "prompt",
     'input fields go inside "input"'),
    ({"modle": T2V, "input": {"prompt": "p"}}, "modle", "did you mean 'model'?"),
    ({"model": T2V, "input": {"prompt": "p"}, "callback": "https://x.example/h"},
     "callback", "did you mean 'callback_url'?"),
])
def test_an_unknown_top_level_key_is_refused(payload: dict[str, Any], field: str,
                                             hint: str) -> None:
    err = refused(payload)
    assert err.field == field
    assert hint in str(err)


@pytest.mark.parametrize(("payload", "field"), [
    ({"input": {"prompt": "p"}}, "model"),
    ({"model": T2V}, "input"),
    ({"model": T2V, "input": ["p"]}, "input"),
    ({"model": T2V, "input": {"prompt": "p"}, "extra_input": ["x"]}, "extra_input"),
    ({"model": T2V, "input": {"prompt": "p"}, "callback_url": "ftp://x/y"}, "callback_url"),
    ({"model": T2V, "input": {"prompt": "p", "duration": 99}}, "duration"),
    ({"model": T2V, "input": {"prompt": "p"}, "extra_input": {"duration": 5}},
     "extra_input['duration']"),
    (["model", T2V], "payload"),
])
def test_malformed_bodies_are_refused_naming_the_field(payload: Any, field: str) -> None:
    assert refused(payload).field == field


@pytest.mark.parametrize(("short", "cls", "model"), [
    ("t2v", wan.TextToVideo, "wan-2.6-text-to-video"),
    ("I2V", wan.ImageToVideo, "wan-2.6-image-to-video"),
    ("r2v", wan.ReferenceToVideo, "wan-2.6-reference-to-video"),
])
def test_the_command_line_s_short_model_names_are_accepted(
    short: str, cls: type[wan.VideoRequest], model: str
) -> None:
    request = wan.request_from_dict({"model": short, "input": {"prompt": "p",
                                                               "image_urls": [IMAGE]}}
                                    if cls is not wan.TextToVideo
                                    else {"model": short, "input": {"prompt": "p"}})
    assert type(request) is cls
    assert request.model == model and request.to_payload()["model"] == model


def test_a_model_the_sdk_does_not_know_is_still_allowed_and_checked() -> None:
    request = wan.request_from_dict({"model": "wan-2.7-image-to-video",
                                     "input": {"prompt": "p", "image_urls": [IMAGE]}})
    assert type(request) is wan.ImageToVideo and request.model == "wan-2.7-image-to-video"
    err = refused({"model": "acme-video-9", "input": {"prompt": "p", "durations": 2}})
    assert "did you mean 'duration'?" in str(err)


# -- on the wire ---------------------------------------------------------------------------


async def test_fan_out_refuses_a_misspelled_body_and_sends_nothing_for_it(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    good = {"model": "t2v", "input": {"prompt": "good", "duration": 2}}
    typo = {"model": T2V, "input": {"prompt": "typo", "durations": 2}}
    outcomes = {o.index: o async for o in client.fan_out([good, typo], concurrency=2)}
    assert outcomes[0].ok
    assert isinstance(outcomes[1].error, wan.ValidationError)
    assert "durations" in str(outcomes[1].error) and "'duration'" in str(outcomes[1].error)
    assert outcomes[1].request is typo  # the body as given, since no request was built
    sent = creates(server)
    assert [r.json["input"]["prompt"] for r in sent] == ["good"]
    assert sent[0].json["model"] == T2V  # the short name is sent as the spec's name
    assert server.spent == 80  # 2 s at 1080p: the typo was not billed at the default 5 s


async def test_extras_named_on_purpose_are_sent_as_given(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    body = {"model": T2V, "input": {"prompt": "p", "duration": 2},
            "extra_input": {"style": {"tone": "warm"}}, "callback_url": "https://h.example/cb"}
    outcomes = [o async for o in client.fan_out([body])]
    assert outcomes[0].task is not None
    (sent,) = creates(server)
    assert sent.json == {"model": T2V, "callback_url": "https://h.example/cb",
                         "input": {"prompt": "p", "duration": 2,
                                   "style": {"tone": "warm"}}}


async def test_an_unknown_model_in_a_dict_reaches_the_server(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    body = {"model": "wan-9-text-to-video", "input": {"prompt": "p"}}
    (outcome,) = [o async for o in client.fan_out([body])]
    assert isinstance(outcome.error, wan.ModelNotFoundError)  # the server's answer
    assert [r.json["model"] for r in creates(server)] == ["wan-9-text-to-video"]


def test_a_batch_line_with_a_misspelled_key_is_refused_with_its_line_and_key(
    tmp_path: Path
) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(
        '{"model": "t2v", "input": {"prompt": "one", "duration": 2}}\n'
        '# a comment\n'
        '{"model": "wan-2.6-text-to-video", "input": {"prompt": "two", "durations": 2}}\n'
    )
    with pytest.raises(BatchError) as info:
        load_jobs(path)
    (line,) = info.value.errors
    assert line.startswith("line 3: input['durations']")
    assert "did you mean 'duration'?" in line
    assert "nothing was submitted" in str(info.value)
