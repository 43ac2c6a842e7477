"""The spec's request rules and pricing, as the emulated server applies them.

This is deliberately an independent implementation: the SDK's own client-side
validation is tested against it, so the two must not share code.

Fields that the spec does not list for a model are accepted and ignored (gateways
pass unknown fields through). A field sent as JSON `null` counts as not sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

__all__ = [
    "ASPECT_RATIOS",
    "CREDITS_PER_SECOND",
    "DEFAULT_DURATION",
    "DEFAULT_RESOLUTION",
    "I2V",
    "InvalidRequest",
    "MAX_DURATION",
    "MAX_NEGATIVE_PROMPT",
    "MAX_PROMPT",
    "MAX_R2V_IMAGES",
    "MAX_R2V_REFERENCES",
    "MAX_R2V_VIDEOS",
    "MAX_SEED",
    "MIN_DURATION",
    "MODELS",
    "R2V",
    "RESOLUTIONS",
    "SHOT_TYPES",
    "T2V",
    "is_http_url",
    "price_of",
    "validate_input",
]

T2V = "wan-2.6-text-to-video"
I2V = "wan-2.6-image-to-video"
R2V = "wan-2.6-reference-to-video"
MODELS = frozenset({T2V, I2V, R2V})

CREDITS_PER_SECOND: Mapping[str, int] = {"720p": 24, "1080p": 40}
DEFAULT_RESOLUTION = "1080p"
DEFAULT_DURATION = 5

MAX_PROMPT = 1500
MAX_NEGATIVE_PROMPT = 500
MAX_SEED = 2_147_483_647
MIN_DURATION = 2
MAX_DURATION: Mapping[str, int] = {T2V: 15, I2V: 15, R2V: 10}
RESOLUTIONS = ("720p", "1080p")
SHOT_TYPES = ("single", "multi")
ASPECT_RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4")
MAX_R2V_IMAGES = 5
MAX_R2V_VIDEOS = 3
MAX_R2V_REFERENCES = 5


class InvalidRequest(Exception):
    """A rule of the spec is broken; the message names the field and the rule."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def is_http_url(value: object) -> bool:
    """Whether `value` is a string holding an absolute http(s) URL with a host."""
    if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def price_of(input: Mapping[str, object]) -> int:
    """Credits charged for a valid input: credits/sec of the resolution x duration."""
    resolution = input.get("resolution") or DEFAULT_RESOLUTION
    duration = input.get("duration")
    seconds = duration if isinstance(duration, int) else DEFAULT_DURATION
    return CREDITS_PER_SECOND[str(resolution)] * seconds


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Checker:
    """Checks one model's `input` object; each method raises `InvalidRequest`."""

    def __init__(self, model: str, input: Mapping[str, object]) -> None:
        self.model = model
        self.input = input

    def fail(self, field: str, rule: str) -> InvalidRequest:
        value = self.input.get(field)
        return InvalidRequest(f"input.{field} {rule} for {self.model}, got {_show(value)}")

    def get(self, field: str) -> object:
        return self.input.get(field)

    def string(self, field: str, *, max_len: int, required: bool = False) -> None:
        value = self.get(field)
        if value is None:
            if required:
                raise InvalidRequest(f"input.{field} is required for {self.model}")
            return
        if not isinstance(value, str):
            raise self.fail(field, "must be a string")
        if required and not value.strip():
            raise self.fail(field, "must not be empty")
        if len(value) > max_len:
            raise InvalidRequest(
                f"input.{field} must be at most {max_len} characters for {self.model}, "
                f"got {len(value)}"
            )

    def choice(self, field: str, allowed: tuple[str, ...]) -> None:
        value = self.get(field)
        if value is not None and value not in allowed:
            options = ", ".join(repr(option) for option in allowed)
            raise self.fail(field, f"must be one of {options}")

    def boolean(self, field: str) -> None:
        value = self.get(field)
        if value is not None and not isinstance(value, bool):
            raise self.fail(field, "must be a boolean (true or false)")

    def integer(self, field: str, low: int, high: int) -> None:
        value = self.get(field)
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(field, f"must be an integer between {low} and {high}")

    def url_list(
        self,
        field: str,
        *,
        max_items: int | None = None,
        exactly: int | None = None,
        required: bool = False,
        no_base64: bool = False,
    ) -> int:
        """Check a list of http(s) URLs; return how many items it has."""
        value = self.get(field)
        if value is None:
            if required:
                raise InvalidRequest(f"input.{field} is required for {self.model}")
            return 0
        if not isinstance(value, list):
            raise self.fail(field, "must be a list of http(s) URL strings")
        if exactly is not None and len(value) != exactly:
            raise InvalidRequest(
                f"input.{field} must contain exactly {exactly} URL for {self.model}, "
                f"got {len(value)}"
            )
        if max_items is not None and len(value) > max_items:
            raise InvalidRequest(
                f"input.{field} must contain at most {max_items} URLs for {self.model}, "
                f"got {len(value)}"
            )
        for index, item in enumerate(value):
            if not is_http_url(item):
                hint = " (base64 and data: URLs are not supported)" if no_base64 else ""
                raise InvalidRequest(
                    f"input.{field}[{index}] must be a public http(s) URL{hint} "
                    f"for {self.model}, got {_show(item)}"
                )
        return len(value)


def validate_input(model: str, input: object) -> None:
    """Check `input` against the spec's rules for `model` (one of `MODELS`).

    Raises `InvalidRequest` at the first broken rule.
    """
    if not isinstance(input, dict):
        if input is None:
            raise InvalidRequest("'input' is required.")
        raise InvalidRequest(f"'input' must be an object, got {_show(input)}")
    check = _Checker(model, input)

    # Common input.
    check.string("prompt", max_len=MAX_PROMPT, required=True)
    check.string("negative_prompt", max_len=MAX_NEGATIVE_PROMPT)
    check.choice("resolution", RESOLUTIONS)
    check.choice("shot_type", SHOT_TYPES)
    check.boolean("prompt_extend")
    check.boolean("watermark")
    check.integer("seed", 0, MAX_SEED)
    if check.get("shot_type") == "multi" and check.get("prompt_extend") is False:
        raise InvalidRequest(
            f"input.shot_type 'multi' requires input.prompt_extend to be true for {model}"
        )

    # Per model.
    check.integer("duration", MIN_DURATION, MAX_DURATION[model])
    if model in (T2V, R2V):
        check.choice("aspect_ratio", ASPECT_RATIOS)
    if model in (I2V, R2V):
        check.boolean("audio")
    if model in (T2V, I2V):
        check.url_list("audio_urls")
    if model == I2V:
        check.url_list("image_urls", exactly=1, required=True, no_base64=True)
    if model == R2V:
        images = check.url_list("image_urls", max_items=MAX_R2V_IMAGES, no_base64=True)
        videos = check.url_list("video_urls", max_items=MAX_R2V_VIDEOS)
        if images + videos == 0:
            raise InvalidRequest(
                f"at least one of input.image_urls or input.video_urls is required for {model}"
            )
        if images + videos > MAX_R2V_REFERENCES:
            raise InvalidRequest(
                f"input.image_urls and input.video_urls combined must contain at most "
                f"{MAX_R2V_REFERENCES} URLs for {model}, got {images + videos}"
            )
