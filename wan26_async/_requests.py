"""The three request classes, their enums, every rule of the spec, and pricing.

A request is checked once, when it is built; a frozen request is never re-checked.
No wire code lives here: the create body is written by `wan26_async._encode`, which
gives this module its encoder when it loads (`use_payload_encoder`), so a request's
``to_payload`` needs no import back up the chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from types import MappingProxyType
from typing import Any, ClassVar, Protocol, cast

import attrs

from ._errors import ValidationError
from ._fielddoc import describe
from ._urls import url_problem

__all__ = ["AspectRatio", "CREDITS_PER_SECOND", "DEFAULT_DURATION", "IMAGE_TO_VIDEO",
           "ImageToVideo", "MAX_NEGATIVE_PROMPT", "MAX_PROMPT", "MAX_SEED", "PayloadEncoder",
           "REFERENCE_TO_VIDEO", "ReferenceToVideo", "Resolution", "ShotType", "TEXT_TO_VIDEO",
           "TextToVideo", "VideoRequest", "request_shape", "use_payload_encoder"]

TEXT_TO_VIDEO = "wan-2.6-text-to-video"
IMAGE_TO_VIDEO = "wan-2.6-image-to-video"
REFERENCE_TO_VIDEO = "wan-2.6-reference-to-video"

MAX_PROMPT = 1500
MAX_NEGATIVE_PROMPT = 500
MAX_SEED = 2_147_483_647
DEFAULT_DURATION = 5


class _StrEnum(str, Enum):
    def __str__(self) -> str:
        return str(self.value)


class Resolution(_StrEnum):
    """Output resolution; the server's default is 1080p."""

    P720 = "720p"
    P1080 = "1080p"


class AspectRatio(_StrEnum):
    """Aspect ratio for text- and reference-to-video; the server's default is 16:9."""

    RATIO_16_9 = "16:9"
    RATIO_9_16 = "9:16"
    RATIO_1_1 = "1:1"
    RATIO_4_3 = "4:3"
    RATIO_3_4 = "3:4"


class ShotType(_StrEnum):
    """Single or multi shot; the server's default is single. ``multi`` needs prompt_extend."""

    SINGLE = "single"
    MULTI = "multi"


#: Credits per second of video, by resolution (the spec's pricing table).
CREDITS_PER_SECOND: Mapping[Resolution, int] = MappingProxyType(
    {Resolution.P720: 24, Resolution.P1080: 40}
)


def _enum_or_raw(enum: type[_StrEnum], value: object) -> Any:
    """Turn a valid plain string into the enum member; leave anything else as it is,
    for the rule check to refuse with a clear message."""
    if isinstance(value, str) and not isinstance(value, enum):
        try:
            return enum(value)
        except ValueError:
            return value
    return value


def _to_resolution(value: Resolution | str | None) -> Any:
    return _enum_or_raw(Resolution, value)


def _to_shot_type(value: ShotType | str | None) -> Any:
    return _enum_or_raw(ShotType, value)


def _to_aspect_ratio(value: AspectRatio | str | None) -> Any:
    return _enum_or_raw(AspectRatio, value)


def _tuple_or_raw(value: object) -> object:
    return tuple(value) if isinstance(value, list | tuple) else value


_NO_EXTRA: Mapping[str, Any] = MappingProxyType({})


def _readonly_mapping(value: object) -> object:
    if not isinstance(value, Mapping):
        return value
    # One shared empty mapping: most requests have no extra input, and each fresh
    # container would be one more object for the garbage collector to scan.
    return MappingProxyType(dict(value)) if value else _NO_EXTRA



@attrs.frozen(kw_only=True)
class VideoRequest:
    """Fields shared by the three models (see the subclasses).

    ``extra_input`` is merged into ``input`` as it is, *unchecked*: it is for fields a
    gateway accepts before this SDK models them. It may not repeat a modeled field.
    """

    #: Fields holding enum members, written as their plain string values.
    ENUM_FIELDS: ClassVar[frozenset[str]] = frozenset({"resolution", "shot_type",
                                                       "aspect_ratio"})
    _MIN_DURATION: ClassVar[int] = 2
    _MAX_DURATION: ClassVar[int] = 15

    model: str
    prompt: str = cast(str, None)
    negative_prompt: str | None = None
    resolution: Resolution | None = attrs.field(default=None, converter=_to_resolution)
    shot_type: ShotType | None = attrs.field(default=None, converter=_to_shot_type)
    prompt_extend: bool | None = None
    watermark: bool | None = None
    seed: int | None = None
    duration: int | None = None
    extra_input: Mapping[str, Any] = attrs.field(
        default=_NO_EXTRA, converter=_readonly_mapping, hash=False,
        repr=lambda m: repr(dict(m))
    )
    # The JSON of ``input``, made on first use: a frozen request never changes.
    _encoded_input: bytes | None = attrs.field(init=False, default=None, eq=False,
                                               hash=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._check()

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as its constructor's arguments (``extra_input`` as a plain dict: a
        # read-only mapping proxy does not pickle), so unpickling builds it anew.
        fields = {f.name: getattr(self, f.name) for f in attrs.fields(type(self)) if f.init}
        fields["extra_input"] = dict(self.extra_input)
        return (_rebuild_request, (type(self), fields))

    # -- rules ------------------------------------------------------------------------

    def _fail(self, field: str, rule: str, value: object) -> ValidationError:
        return ValidationError(field, rule, model=self.model, value=value)

    def _check(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValidationError("model", "must be a non-empty model name", value=self.model)
        self._check_text("prompt", self.prompt, MAX_PROMPT, required=True)
        self._check_text("negative_prompt", self.negative_prompt, MAX_NEGATIVE_PROMPT)
        self._check_enum("resolution", self.resolution, Resolution)
        self._check_enum("shot_type", self.shot_type, ShotType)
        for name in ("prompt_extend", "watermark"):
            self._check_bool(name, getattr(self, name))
        seed = self.seed
        if seed is not None and (
            not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED
        ):
            raise self._fail("seed", f"must be an integer between 0 and {MAX_SEED}", seed)
        if self.shot_type is ShotType.MULTI and self.prompt_extend is False:
            raise self._fail(
                "shot_type",
                "'multi' requires prompt_extend to be true (leave it unset or pass True)",
                "multi",
            )
        duration = self.duration
        lo, hi = self._MIN_DURATION, self._MAX_DURATION
        if duration is not None and (
            not isinstance(duration, int) or isinstance(duration, bool) or not lo <= duration <= hi
        ):
            raise self._fail("duration", f"must be a whole number of seconds from {lo} to {hi}",
                             duration)
        if not isinstance(self.extra_input, Mapping):
            raise self._fail("extra_input", "must be a mapping of extra input fields",
                             self.extra_input)
        modeled = {f.name for f in attrs.fields(type(self))} - {"model", "extra_input",
                                                                  "_encoded_input"}
        for key in self.extra_input:
            if not isinstance(key, str):
                raise self._fail("extra_input", "keys must be strings", key)
            if key in modeled:
                raise self._fail(
                    f"extra_input[{key!r}]",
                    f"repeats a modeled field; pass {key}=... so it is checked",
                    self.extra_input[key],
                )

    def _check_text(self, field: str, value: object, limit: int, *, required: bool = False) -> None:
        if value is None:
            if required:
                raise self._fail(field, "is required", value)
            return
        if not isinstance(value, str):
            raise self._fail(field, "must be a string", value)
        if required and not value.strip():
            raise self._fail(field, "must not be empty", value)
        if len(value) > limit:
            raise self._fail(field, f"must be at most {limit} characters (has {len(value)})",
                             value)

    def _check_enum(self, field: str, value: object, enum: type[_StrEnum]) -> None:
        if value is not None and not isinstance(value, enum):
            allowed = ", ".join(m.value for m in enum)
            raise self._fail(field, f"must be one of {allowed}", value)

    def _check_bool(self, field: str, value: object) -> None:
        if value is not None and not isinstance(value, bool):
            raise self._fail(field, "must be true or false", value)

    def _check_urls(
        self, field: str, value: object, *, kind: str, max_count: int | None = None
    ) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str) or not isinstance(value, tuple):
            raise self._fail(field, f"must be a list of {kind} URLs", value)
        if max_count is not None and len(value) > max_count:
            raise self._fail(field, f"must hold at most {max_count} {kind} URLs "
                             f"(has {len(value)})", list(value))
        for i, url in enumerate(value):
            self._check_url(f"{field}[{i}]", url, kind)
        return value

    def _check_url(self, field: str, url: object, kind: str) -> None:
        problem = url_problem(url, kind)
        if problem is not None:
            raise self._fail(field, problem, url)

    def _check_aspect_ratio(self, value: object) -> None:
        self._check_enum("aspect_ratio", value, AspectRatio)

    # -- public -----------------------------------------------------------------------

    @property
    def estimated_credits(self) -> int:
        """Credits the server charges at creation: credits/second at the resolution
        (24 at 720p, 40 at 1080p) times the duration, using the server's defaults
        (1080p, 5 s) for unset fields. Refunded if the task fails."""
        resolution = self.resolution or Resolution.P1080
        return CREDITS_PER_SECOND[resolution] * (self.duration or DEFAULT_DURATION)

    def to_payload(self) -> dict[str, Any]:
        """The JSON body of the create call: ``{"model": ..., "input": {...}}``.

        Unset fields are left out so the server's defaults apply.
        """
        assert _encoder is not None, "wan26_async._encode sets the encoder when it loads"
        return _encoder(self)


@attrs.frozen(kw_only=True)
class TextToVideo(VideoRequest):
    """Text-to-video (``wan-2.6-text-to-video``).

    >>> TextToVideo(prompt="A robot in a rainy neon alley", duration=5).estimated_credits
    200
    """

    model: str = TEXT_TO_VIDEO
    aspect_ratio: AspectRatio | None = attrs.field(default=None, converter=_to_aspect_ratio)
    audio_urls: tuple[str, ...] | None = attrs.field(default=None, converter=_tuple_or_raw)

    def _check(self) -> None:
        super()._check()
        self._check_aspect_ratio(self.aspect_ratio)
        self._check_urls("audio_urls", self.audio_urls, kind="audio")


@attrs.frozen(kw_only=True)
class ImageToVideo(VideoRequest):
    """Image-to-video from one first-frame image (``wan-2.6-image-to-video``).

    ``image_urls`` must hold exactly one public http(s) URL; base64 is not supported.
    The output's aspect ratio follows the image.
    """

    model: str = IMAGE_TO_VIDEO
    image_urls: tuple[str, ...] = attrs.field(default=cast(tuple[str, ...], None),
                                              converter=_tuple_or_raw)
    audio_urls: tuple[str, ...] | None = attrs.field(default=None, converter=_tuple_or_raw)
    audio: bool | None = None

    def _check(self) -> None:
        super()._check()
        if self.image_urls is None:
            raise self._fail("image_urls", "is required: exactly 1 http(s) URL of the "
                             "first-frame image", None)
        urls = self._check_urls("image_urls", self.image_urls, kind="image")
        if len(urls) != 1:
            raise self._fail("image_urls", f"must hold exactly 1 image URL (has {len(urls)})",
                             list(urls))
        self._check_urls("audio_urls", self.audio_urls, kind="audio")
        self._check_bool("audio", self.audio)


@attrs.frozen(kw_only=True)
class ReferenceToVideo(VideoRequest):
    """Reference-to-video (``wan-2.6-reference-to-video``).

    Give up to 5 ``image_urls`` and up to 3 ``video_urls``, at least one and at most 5
    in all; refer to them in the prompt as character1, character2, ... in that order.
    Duration is 2-10 seconds.
    """

    _MAX_DURATION: ClassVar[int] = 10
    MAX_IMAGES: ClassVar[int] = 5
    MAX_VIDEOS: ClassVar[int] = 3
    MAX_REFERENCES: ClassVar[int] = 5

    model: str = REFERENCE_TO_VIDEO
    image_urls: tuple[str, ...] | None = attrs.field(default=None, converter=_tuple_or_raw)
    video_urls: tuple[str, ...] | None = attrs.field(default=None, converter=_tuple_or_raw)
    aspect_ratio: AspectRatio | None = attrs.field(default=None, converter=_to_aspect_ratio)
    audio: bool | None = None

    def _check(self) -> None:
        super()._check()
        images = self._check_urls("image_urls", self.image_urls, kind="image",
                                  max_count=self.MAX_IMAGES)
        videos = self._check_urls("video_urls", self.video_urls, kind="video",
                                  max_count=self.MAX_VIDEOS)
        total = len(images) + len(videos)
        if total == 0:
            raise self._fail("image_urls/video_urls", "need at least one reference image or "
                             "video URL", None)
        if total > self.MAX_REFERENCES:
            raise self._fail("image_urls/video_urls", f"may hold at most {self.MAX_REFERENCES} "
                             f"references in all (has {len(images)} images + {len(videos)} "
                             "videos)", total)
        self._check_aspect_ratio(self.aspect_ratio)
        self._check_bool("audio", self.audio)


def _rebuild_request(cls: type[VideoRequest], fields: dict[str, Any]) -> VideoRequest:
    """Unpickle a request pickled by `VideoRequest.__reduce__`."""
    return cls(**fields)


def request_shape(request: VideoRequest) -> tuple[str, str, int]:
    """What tasks that take about as long share: (model, resolution, duration), with the
    server's defaults; one shared tuple per shape."""
    # ``_value_``: what the ``value`` property reads, without the property's call
    shape = (request.model, (request.resolution or Resolution.P1080)._value_,
             request.duration or DEFAULT_DURATION)
    return _SHAPES.setdefault(shape, shape)


_SHAPES: dict[tuple[str, str, int], tuple[str, str, int]] = {}


class PayloadEncoder(Protocol):
    """Writes a request as its create body ``{"model": ..., "input": {...}}``."""

    def __call__(self, request: VideoRequest, /) -> dict[str, Any]: ...


_encoder: PayloadEncoder | None = None  # importing the package loads _encode, which sets it


def use_payload_encoder(encoder: PayloadEncoder) -> None:
    """Make ``encoder`` the one `VideoRequest.to_payload` uses (`_encode` calls this)."""
    global _encoder
    _encoder = encoder


for _cls in (VideoRequest, TextToVideo, ImageToVideo, ReferenceToVideo):
    describe(_cls)  # the field table in help() and the reference, a readable signature
