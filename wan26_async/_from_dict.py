"""A create body given as a dict (``fan_out`` items, batch-file lines) -> a checked request.

A dict is checked exactly like the request classes, and more: a key the model does not
have is refused, naming the field it most resembles, because a typo (``"durations"``)
would otherwise ship silently at the server's defaults (and price).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from ._errors import ValidationError
from ._requests import (
    IMAGE_TO_VIDEO,
    REFERENCE_TO_VIDEO,
    TEXT_TO_VIDEO,
    ImageToVideo,
    ReferenceToVideo,
    TextToVideo,
    VideoRequest,
)
from ._urls import url_problem

__all__ = ["MODEL_ALIASES", "request_from_dict"]

#: The short names of the command line, accepted for ``model`` (any letter case).
MODEL_ALIASES: Mapping[str, str] = MappingProxyType(
    {"t2v": TEXT_TO_VIDEO, "i2v": IMAGE_TO_VIDEO, "r2v": REFERENCE_TO_VIDEO}
)

_CLASSES: tuple[type[VideoRequest], ...] = (TextToVideo, ImageToVideo, ReferenceToVideo)
#: The keys a create body may have beside ``input``.
_TOP_LEVEL = ("model", "input", "extra_input", "callback_url")
_MOVE_EXTRAS = 'a field the SDK does not model goes in "extra_input", beside "input"'


def _fields(cls: type[VideoRequest]) -> frozenset[str]:
    return frozenset(f.name for f in attrs.fields(cls) if f.init) - {"model", "extra_input"}


_FIELDS = {cls: _fields(cls) for cls in _CLASSES}


def _class_for_model(model: str, inp: Mapping[str, Any]) -> type[VideoRequest]:
    # The spec's names first, then what a newer model's name says, then its fields.
    if model == IMAGE_TO_VIDEO:
        return ImageToVideo
    if model == REFERENCE_TO_VIDEO:
        return ReferenceToVideo
    if model == TEXT_TO_VIDEO:
        return TextToVideo
    name = model.lower()
    for word, cls in (("reference", ReferenceToVideo), ("r2v", ReferenceToVideo),
                      ("image", ImageToVideo), ("i2v", ImageToVideo),
                      ("text", TextToVideo), ("t2v", TextToVideo)):
        if word in name:
            return cls
    if "video_urls" in inp:
        return ReferenceToVideo
    return ImageToVideo if "image_urls" in inp else TextToVideo


def _nearest(key: str, known: frozenset[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(known))}"


def _unknown_input_key(key: object, value: object, cls: type[VideoRequest],
                       model: str) -> ValidationError:
    if not isinstance(key, str):
        return ValidationError("input", "keys must be strings", model=model, value=key)
    elsewhere = [c.__name__ for c in _CLASSES if c is not cls and key in _FIELDS[c]]
    hint = (f"it is a field of {' and '.join(elsewhere)} only" if elsewhere
            else _nearest(key, _FIELDS[cls]))
    # The model is named in the rule, so the advice comes last in the message.
    err = ValidationError(f"input[{key!r}]", f"is not an input field of {model} ({hint}); "
                          f"{_MOVE_EXTRAS}", value=value)
    err.model = model
    return err


def request_from_dict(payload: Mapping[str, Any]) -> VideoRequest:
    """Build the request object of a create body, checked like the request classes.

    ``payload`` is ``{"model": ..., "input": {...}}`` as in the spec (the JSON of a batch
    line, or an item of ``fan_out``), optionally with ``"callback_url"`` and with
    ``"extra_input": {...}``, input fields sent as they are, unchecked, for a gateway
    that accepts fields this SDK does not model yet:

        request = wan.request_from_dict(
            {"model": "wan-2.6-text-to-video", "input": {"prompt": "a fox", "duration": 5}})

    ``model`` may be the spec's name, the command line's short name (``"t2v"``,
    ``"i2v"``, ``"r2v"``) or any other name: a model the SDK does not know is sent as it
    is, checked by the request class its name or fields suggest (text-to-video unless
    it says image/reference or has image or video URLs).

    Raises `ValidationError` before any I/O for a broken rule, an ``input`` key the model
    does not have (naming the field it most resembles: ``"durations"`` -> ``duration``),
    an unknown key beside ``input``, or a ``callback_url`` that is not a public http(s)
    URL.
    """
    if not isinstance(payload, Mapping):
        raise ValidationError("payload", "must be an object with 'model' and 'input'",
                              value=payload)
    for key in payload:
        if key not in _TOP_LEVEL:
            inside = any(key in fields for fields in _FIELDS.values())
            hint = ('input fields go inside "input"' if inside
                    else _nearest(str(key), _TOP_LEVEL))
            raise ValidationError(str(key), f"is not a key of a create body, which has "
                                  f"{', '.join(_TOP_LEVEL)} ({hint})", value=payload[key])
    model = payload.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ValidationError("model", "is required: the model name, or t2v, i2v or r2v",
                              value=model)
    model = MODEL_ALIASES.get(model.strip().lower(), model)
    inp = payload.get("input")
    if not isinstance(inp, Mapping):
        raise ValidationError("input", "must be an object of input fields", model=model,
                              value=inp)
    extra = payload.get("extra_input", {})
    if not isinstance(extra, Mapping):
        raise ValidationError("extra_input", "must be an object of extra input fields",
                              model=model, value=extra)
    callback_url = payload.get("callback_url")
    if callback_url is not None:
        problem = url_problem(callback_url)
        if problem is not None:
            raise ValidationError("callback_url", problem, model=model, value=callback_url)
    cls = _class_for_model(model, inp)
    fields = _FIELDS[cls]
    for key in inp:
        if key not in fields:
            raise _unknown_input_key(key, inp[key], cls, model)
    return cls(model=model, extra_input=extra, **inp)
