"""Requests out: the one cattrs converter, the create body's bytes, idempotency keys.

Fields left unset are not written, so the server's documented defaults apply; enum
members go out as their plain string values and ``extra_input`` is merged into
``input`` as it is. Loading this module gives `VideoRequest.to_payload` its encoder.
"""

from __future__ import annotations

import functools
import json
import json.encoder
import os
from collections.abc import Callable
from enum import Enum
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_unstructure_fn, override

from ._requests import VideoRequest, use_payload_encoder

__all__ = ["converter", "new_idempotency_key", "request_body", "request_payload"]

converter = cattrs.Converter()


def _is_request(cls: type) -> bool:
    return isinstance(cls, type) and issubclass(cls, VideoRequest)


def _request_unstructure_factory(cls: type) -> Callable[[Any], dict[str, Any]]:
    # model goes beside "input", extra_input is merged into it; None means "unset";
    # enum members go out as their plain string values.
    enums: dict[str, Any] = {
        f.name: override(unstruct_hook=_enum_value)
        for f in attrs.fields(cls)
        if f.name in VideoRequest.ENUM_FIELDS
    }
    return make_dict_unstructure_fn(
        cls,
        converter,
        _cattrs_omit_if_default=True,
        model=override(omit=True),
        extra_input=override(omit=True),
        _encoded_input=override(omit=True),
        **enums,
    )


def _enum_value(member: Enum | None) -> Any:
    return None if member is None else member.value


converter.register_unstructure_hook_factory(_is_request, _request_unstructure_factory)


def request_payload(request: VideoRequest) -> dict[str, Any]:
    """``{"model": ..., "input": {...}}`` for a request object (see ``to_payload``)."""
    return {"model": request.model, "input": _input_of(request)}


def _input_of(request: VideoRequest) -> dict[str, Any]:
    """The ``input`` object of a request: its set fields, then ``extra_input``."""
    cls = type(request)
    hook = _INPUT_HOOKS.get(cls)
    if hook is None:  # the converter's hook for the class, found once instead of per call
        get_hook = getattr(converter, "get_unstructure_hook", None)  # cattrs >= 24.1
        hook = _INPUT_HOOKS[cls] = get_hook(cls) if get_hook is not None else \
            functools.partial(converter.unstructure, unstructure_as=cls)
    data: dict[str, Any] = hook(request)
    if request.extra_input:
        data.update(request.extra_input)
    return data


_INPUT_HOOKS: dict[type, Callable[[Any], dict[str, Any]]] = {}


use_payload_encoder(request_payload)


def request_body(request: VideoRequest, callback_url: str | None = None) -> bytes:
    """The create call's JSON body. A request is frozen, so its encoded ``input`` is
    computed once and reused (do not mutate values nested in ``extra_input``)."""
    encoded = request._encoded_input
    if encoded is None:
        encoded = _dumps(_input_of(request))
        object.__setattr__(request, "_encoded_input", encoded)
    head = _MODEL_HEADS.get(request.model)
    if head is None:
        head = _MODEL_HEADS[request.model] = b'{"model":' + _dumps(request.model)
    if callback_url is not None:
        head += b',"callback_url":' + _dumps(callback_url)
    return head + b',"input":' + encoded + b"}"


_MODEL_HEADS: dict[str, bytes] = {}
# One encoder, made once: json.dumps(..., separators=...) builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
# What _ENCODER.encode runs for a dict (json.encoder's C one-shot path), without the
# Python around it (which defines a closure per call): a C encoder with its own fresh
# map of the containers being encoded (circular references are refused as before).
_make_c_encoder: Any = getattr(json.encoder, "c_make_encoder", None)


def _dumps(value: Any) -> bytes:
    if _make_c_encoder is None or type(value) is not dict:
        return _ENCODER.encode(value).encode()
    enc = _ENCODER
    return "".join(_make_c_encoder(
        {}, enc.default, json.encoder.encode_basestring, None, enc.key_separator,
        enc.item_separator, enc.sort_keys, enc.skipkeys, enc.allow_nan)(value, 0)).encode()


def new_idempotency_key() -> str:
    """A random (version 4) UUID string, made at a third of the cost of ``str(uuid4())``."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


#: The variant digit of a UUID (``10xx`` in binary) for each random hex digit.
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}
