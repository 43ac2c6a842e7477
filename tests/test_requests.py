"""Request objects: every rule of the spec at its edge, payloads, pricing."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

import wan26_async as wan

IMG = "https://example.com/a.png"
VID = "https://example.com/a.mp4"
AUD = "https://example.com/a.mp3"

# The spec's three curl examples, minus callback_url (added by create_task).
T2V_EXAMPLE = {
    "model": "wan-2.6-text-to-video",
    "input": {
        "prompt": "A cinematic shot of a small robot walking through a rainy neon alley",
        "aspect_ratio": "16:9",
        "resolution": "1080p",
        "duration": 5,
    },
}
I2V_EXAMPLE = {
    "model": "wan-2.6-image-to-video",
    "input": {
        "prompt": "The subject turns toward the camera while the background lights move softly",
        "image_urls": ["https://example.com/first-frame.png"],
        "resolution": "1080p",
        "duration": 5,
    },
}
R2V_EXAMPLE = {
    "model": "wan-2.6-reference-to-video",
    "input": {
        "prompt": "character1 walks into the room and speaks to character2.",
        "image_urls": ["https://example.com/character1.png"],
        "video_urls": ["https://example.com/character2.mp4"],
        "aspect_ratio": "16:9",
        "resolution": "1080p",
        "duration": 8,
        "shot_type": "multi",
    },
}

MINIMAL: dict[type[wan.VideoRequest], dict[str, Any]] = {
    wan.TextToVideo: {"prompt": "p"},
    wan.ImageToVideo: {"prompt": "p", "image_urls": [IMG]},
    wan.ReferenceToVideo: {"prompt": "p", "image_urls": [IMG]},
}
ALL = list(MINIMAL)


def build(cls: type[wan.VideoRequest], **kw: Any) -> wan.VideoRequest:
    return cls(**{**MINIMAL[cls], **kw})


def refused(cls: type[wan.VideoRequest], field: str, **kw: Any) -> wan.ValidationError:
    with pytest.raises(wan.ValidationError) as info:
        build(cls, **kw)
    err = info.value
    assert err.field.startswith(field), (err.field, field)
    assert err.model == attrs.fields_dict(cls)["model"].default
    assert err.model in str(err) and field in str(err)
    return err


def test_spec_curl_examples_become_exactly_their_json_bodies() -> None:
    t2v = wan.TextToVideo(
        prompt=T2V_EXAMPLE["input"]["prompt"], aspect_ratio="16:9", resolution="1080p",
        duration=5,
    )
    i2v = wan.ImageToVideo(
        prompt=I2V_EXAMPLE["input"]["prompt"],
        image_urls=["https://example.com/first-frame.png"], resolution="1080p", duration=5,
    )
    r2v = wan.ReferenceToVideo(
        prompt=R2V_EXAMPLE["input"]["prompt"],
        image_urls=["https://example.com/character1.png"],
        video_urls=["https://example.com/character2.mp4"],
        aspect_ratio=wan.AspectRatio.RATIO_16_9, resolution=wan.Resolution.P1080, duration=8,
        shot_type=wan.ShotType.MULTI,
    )
    for request, expected in ((t2v, T2V_EXAMPLE), (i2v, I2V_EXAMPLE), (r2v, R2V_EXAMPLE)):
        payload = request.to_payload()
        assert payload == expected
        # plain strings on the wire, not enum members
        assert all(type(v) in (str, int, list) for v in payload["input"].values())


@pytest.mark.parametrize("cls", ALL)
def test_unset_fields_are_not_sent(cls: type[wan.VideoRequest]) -> None:
    assert build(cls).to_payload()["input"].keys() == MINIMAL[cls].keys()


@pytest.mark.parametrize("cls", ALL)
def test_payload_round_trips_through_the_converter(cls: type[wan.VideoRequest]) -> None:
    request = build(cls, resolution="720p", seed=7, watermark=True, negative_prompt="blur",
                    extra_input={"new_field": {"x": 1}})
    payload = request.to_payload()
    assert payload["input"]["new_field"] == {"x": 1}
    # On the wire the extra is merged into input; given as a dict it is named on purpose.
    del payload["input"]["new_field"]
    assert wan.request_from_dict({**payload, "extra_input": {"new_field": {"x": 1}}}) == request


def test_default_models_are_the_spec_names_and_any_model_is_accepted() -> None:
    assert wan.TextToVideo(prompt="p").model == "wan-2.6-text-to-video"
    assert build(wan.ImageToVideo).model == "wan-2.6-image-to-video"
    assert build(wan.ReferenceToVideo).model == "wan-2.6-reference-to-video"
    assert wan.TextToVideo(prompt="p", model="wan-2.7-preview").to_payload()["model"] == (
        "wan-2.7-preview"
    )


@pytest.mark.parametrize("cls", ALL)
def test_requests_are_frozen_and_keyword_only(cls: type[wan.VideoRequest]) -> None:
    request = build(cls)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        request.prompt = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cls("positional")  # type: ignore[misc]


# -- prompt ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL)
def test_prompt_limits(cls: type[wan.VideoRequest]) -> None:
    assert build(cls, prompt="x" * 1500).prompt == "x" * 1500
    err = refused(cls, "prompt", prompt="x" * 1501)
    assert "1500" in str(err)
    refused(cls, "prompt", prompt="")
    refused(cls, "prompt", prompt="   ")
    refused(cls, "prompt", prompt=None)
    refused(cls, "prompt", prompt=123)


def test_missing_prompt_is_a_validation_error() -> None:
    with pytest.raises(wan.ValidationError, match="prompt is required"):
        wan.TextToVideo()


@pytest.mark.parametrize("cls", ALL)
def test_negative_prompt_limit(cls: type[wan.VideoRequest]) -> None:
    build(cls, negative_prompt="n" * 500)
    assert "500" in str(refused(cls, "negative_prompt", negative_prompt="n" * 501))


# -- enums -------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("value", ["720p", "1080p", wan.Resolution.P720])
def test_resolution_accepts_strings_and_members(cls: type[wan.VideoRequest], value: Any) -> None:
    request = build(cls, resolution=value)
    assert request.resolution == wan.Resolution(value)
    assert request.to_payload()["input"]["resolution"] == str(value)


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("value", ["480p", "1080P", "4k", 720])
def test_resolution_refuses_others(cls: type[wan.VideoRequest], value: Any) -> None:
    err = refused(cls, "resolution", resolution=value)
    assert "720p, 1080p" in str(err)


@pytest.mark.parametrize("cls", [wan.TextToVideo, wan.ReferenceToVideo])
@pytest.mark.parametrize("value", ["16:9", "9:16", "1:1", "4:3", "3:4"])
def test_the_five_aspect_ratios(cls: type[wan.VideoRequest], value: str) -> None:
    assert build(cls, aspect_ratio=value).to_payload()["input"]["aspect_ratio"] == value


@pytest.mark.parametrize("cls", [wan.TextToVideo, wan.ReferenceToVideo])
@pytest.mark.parametrize("value", ["21:9", "16x9", ""])
def test_other_aspect_ratios_are_refused(cls: type[wan.VideoRequest], value: str) -> None:
    refused(cls, "aspect_ratio", aspect_ratio=value)


def test_image_to_video_has_no_aspect_ratio() -> None:
    with pytest.raises(TypeError):
        wan.ImageToVideo(prompt="p", image_urls=[IMG], aspect_ratio="16:9")  # type: ignore[call-arg]


@pytest.mark.parametrize("cls", ALL)
def test_shot_type(cls: type[wan.VideoRequest]) -> None:
    assert build(cls, shot_type="single").shot_type is wan.ShotType.SINGLE
    assert build(cls, shot_type="multi").shot_type is wan.ShotType.MULTI
    assert build(cls, shot_type="multi", prompt_extend=True).prompt_extend is True
    refused(cls, "shot_type", shot_type="double")
    err = refused(cls, "shot_type", shot_type="multi", prompt_extend=False)
    assert "prompt_extend" in str(err)


# -- numbers and booleans ----------------------------------------------------------------


@pytest.mark.parametrize(("cls", "top"), [
    (wan.TextToVideo, 15), (wan.ImageToVideo, 15), (wan.ReferenceToVideo, 10),
])
def test_duration_edges(cls: type[wan.VideoRequest], top: int) -> None:
    assert build(cls, duration=2).duration == 2
    assert build(cls, duration=top).duration == top
    err = refused(cls, "duration", duration=top + 1)
    assert f"2 to {top}" in str(err) and str(top + 1) in str(err)
    refused(cls, "duration", duration=1)
    refused(cls, "duration", duration=5.0)
    refused(cls, "duration", duration=True)
    refused(cls, "duration", duration="5")


@pytest.mark.parametrize("cls", ALL)
def test_seed_edges(cls: type[wan.VideoRequest]) -> None:
    build(cls, seed=0)
    build(cls, seed=2147483647)
    refused(cls, "seed", seed=2147483648)
    refused(cls, "seed", seed=-1)
    refused(cls, "seed", seed=True)
    refused(cls, "seed", seed=1.5)


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("field", ["prompt_extend", "watermark"])
def test_booleans_must_be_booleans(cls: type[wan.VideoRequest], field: str) -> None:
    assert build(cls, **{field: False}).to_payload()["input"][field] is False
    refused(cls, field, **{field: "yes"})
    refused(cls, field, **{field: 1})


@pytest.mark.parametrize("cls", [wan.ImageToVideo, wan.ReferenceToVideo])
def test_audio_flag(cls: type[wan.VideoRequest]) -> None:
    assert build(cls, audio=True).to_payload()["input"]["audio"] is True
    refused(cls, "audio", audio="true")


# -- URLs --------------------------------------------------------------------------------


def test_image_to_video_needs_exactly_one_http_image() -> None:
    assert wan.ImageToVideo(prompt="p", image_urls=[IMG]).image_urls == (IMG,)
    assert wan.ImageToVideo(prompt="p", image_urls=["http://x.test/a.jpg"])
    refused(wan.ImageToVideo, "image_urls", image_urls=None)
    refused(wan.ImageToVideo, "image_urls", image_urls=[])
    refused(wan.ImageToVideo, "image_urls", image_urls=[IMG, IMG])
    refused(wan.ImageToVideo, "image_urls", image_urls=IMG)  # a bare string, not a list
    refused(wan.ImageToVideo, "image_urls", image_urls=["ftp://example.com/a.png"])
    refused(wan.ImageToVideo, "image_urls", image_urls=["example.com/a.png"])


def test_base64_and_data_urls_are_refused_with_a_message_saying_so() -> None:
    err = refused(wan.ImageToVideo, "image_urls",
                  image_urls=["data:image/png;base64,iVBORw0KGgo="])
    assert "base64" in str(err)
    err = refused(wan.ImageToVideo, "image_urls", image_urls=["iVBORw0KGgo" * 10])
    assert "base64" in str(err)


@pytest.mark.parametrize("cls", [wan.TextToVideo, wan.ImageToVideo])
def test_audio_urls(cls: type[wan.VideoRequest]) -> None:
    assert build(cls, audio_urls=[AUD, AUD]).to_payload()["input"]["audio_urls"] == [AUD, AUD]
    refused(cls, "audio_urls", audio_urls=["file:///tmp/a.mp3"])


def test_reference_to_video_counts() -> None:
    R = wan.ReferenceToVideo
    R(prompt="p", image_urls=[IMG] * 5)
    R(prompt="p", video_urls=[VID] * 3)
    R(prompt="p", image_urls=[IMG] * 2, video_urls=[VID] * 3)
    refused(R, "image_urls", image_urls=[IMG] * 6)
    refused(R, "video_urls", image_urls=None, video_urls=[VID] * 4)
    err = refused(R, "image_urls/video_urls", image_urls=[IMG] * 3, video_urls=[VID] * 3)
    assert "at most 5" in str(err)
    refused(R, "image_urls/video_urls", image_urls=None)
    refused(R, "image_urls/video_urls", image_urls=[], video_urls=[])
    refused(R, "video_urls", video_urls=["rtmp://example.com/live"])


# -- extra_input and pricing -------------------------------------------------------------


def test_extra_input_is_merged_unchecked_but_cannot_shadow_a_field() -> None:
    request = wan.TextToVideo(prompt="p", extra_input={"camera": "dolly"})
    assert request.to_payload() == {
        "model": "wan-2.6-text-to-video", "input": {"prompt": "p", "camera": "dolly"},
    }
    err = refused(wan.TextToVideo, "extra_input", extra_input={"duration": 99})
    assert "duration=" in str(err)


@pytest.mark.parametrize(("kw", "credits"), [
    ({}, 200),  # defaults: 1080p x 5 s x 40
    ({"resolution": "720p"}, 120),
    ({"resolution": "1080p", "duration": 15}, 600),
    ({"resolution": "720p", "duration": 2}, 48),
])
def test_estimated_credits_follow_the_spec_pricing(kw: dict[str, Any], credits: int) -> None:
    assert wan.TextToVideo(prompt="p", **kw).estimated_credits == credits


def test_validation_error_is_a_value_error_naming_field_rule_model_value() -> None:
    with pytest.raises(ValueError) as info:
        wan.TextToVideo(prompt="p", duration=20)
    err = info.value
    assert isinstance(err, wan.ValidationError) and isinstance(err, wan.WanError)
    assert (err.field, err.model, err.value) == ("duration", "wan-2.6-text-to-video", 20)
    assert str(err) == ("duration must be a whole number of seconds from 2 to 15 "
                        "for wan-2.6-text-to-video, got 20")


def test_requests_are_hashable_and_comparable() -> None:
    a = wan.TextToVideo(prompt="p", extra_input={"x": 1})
    b = wan.TextToVideo(prompt="p", extra_input={"x": 1})
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
