"""Requests out: the one cattrs converter, the create body's bytes, idempotency keys.

Fields left unset are not written, so the server's documented defaults apply; enum
members go out as their plain string values and ``extra_input`` is merged into
``input`` as it is. Loading this module gives `VideoRequest.to_payload` its encoder.
"""

from __future__ import annotations

import json
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
    data: dict[str, Any] = converter.unstructure(request)
    if request.extra_input:
        data.update(request.extra_input)
    return {"model": request.model, "input": data}


use_payload_encoder(request_payload)


def request_body(request: VideoRequest, callback_url: str | None = None) -> bytes:
    """The create call's JSON body. A request is frozen, so its encoded ``input`` is
    computed once and reused (do not mutate values nested in ``extra_input``)."""
    encoded = request._encoded_input
    if encoded is None:
        encoded = _dumps(request_payload(request)["input"])
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


def _dumps(value: Any) -> bytes:
    return _ENCODER.encode(value).encode()


def new_idempotency_key() -> str:
    """A random (version 4) UUID string, made at half the cost of ``str(uuid4())``."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"
