"""What `help()` and the API reference show of a request class: every field it takes.

`describe(cls)` appends to the class docstring a list of all its fields (inherited ones
included) with the type to pass, the default and the rule checked, and gives the class a
signature written as a call is: required fields without a default, types as passed
(``resolution: Resolution | str | None = None``, not ``'object'``). The API reference
shows the same rows as a table (`field_table`, used by docs/_ext/griffe_runtime.py).

The texts are here; field names and literal defaults come from `attrs.fields`, so the
rows follow the class. A field with no text here is shown as "undocumented", which
tests/test_reference_docs.py refuses.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Mapping

import attrs

__all__ = ["describe", "field_list", "field_table", "rows"]

#: field -> (type as passed, shown when left out, rule). "required" marks a field whose
#: absence is refused (by the rule check, so its attrs default is None). Rows follow the
#: spec's tables: required fields, the class's own fields, then these.
_COMMON: Mapping[str, tuple[str, str, str]] = {
    "prompt": ("str", "required", "1-1500 characters, not blank"),
    "negative_prompt": ("str", "not set", "at most 500 characters"),
    "resolution": ("Resolution or str", "server: 1080p", "720p or 1080p"),
    "shot_type": ("ShotType or str", "server: single", "single or multi; multi needs "
                  "prompt_extend"),
    "prompt_extend": ("bool", "server: true", "True lets the server rewrite the prompt"),
    "watermark": ("bool", "server: false", "True adds a watermark"),
    "seed": ("int", "not set", "0 to 2147483647"),
    "duration": ("int", "server: 5", "2-15 seconds"),
    "model": ("str", "required", "any non-empty name; not checked, so a gateway's newer "
              "model works"),
    "extra_input": ("Mapping[str, Any]", "{}", "more input fields, sent unchecked; may not "
                    "repeat a field above"),
}
_ASPECT_RATIO = ("AspectRatio or str", "server: 16:9", "16:9, 9:16, 1:1, 4:3 or 3:4")
_AUDIO = ("bool", "server: model decides", "True generates audio")
_BY_CLASS: Mapping[str, Mapping[str, tuple[str, str, str]]] = {
    "TextToVideo": {
        "aspect_ratio": _ASPECT_RATIO,
        "duration": _COMMON["duration"],
        "audio_urls": ("list[str]", "not set", "public http(s) URLs of reference audio; "
                       "the first is used"),
    },
    "ImageToVideo": {
        "image_urls": ("list[str]", "required", "exactly 1 public http(s) URL of the first "
                       "frame (no base64)"),
        "audio_urls": ("list[str]", "not set", "public http(s) URLs of driving audio; the "
                       "first is used"),
        "duration": _COMMON["duration"],
        "audio": _AUDIO,
    },
    "ReferenceToVideo": {
        "image_urls": ("list[str]", "not set", "at most 5 public http(s) image URLs (*)"),
        "video_urls": ("list[str]", "not set", "at most 3 public http(s) video URLs (*)"),
        "aspect_ratio": _ASPECT_RATIO,
        "duration": ("int", "server: 5", "2-10 seconds"),
        "audio": _AUDIO,
    },
}
_NOTES: Mapping[str, str] = {
    "ReferenceToVideo": "(*) At least one reference image or video, and at most 5 in all.",
}
_INTRO = ("Fields, all keyword-only. A field left out is not sent: \"server: X\" is the "
          "default the server then applies.")
_HEADER = ("Field", "Type", "Default", "Rule")


class _Code(str):
    """Text a signature shows as it is (a plain string would be shown in quotes)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str.__str__(self)


def rows(cls: type) -> list[tuple[str, str, str, str]]:
    """(field, type, default, rule) for every field ``cls`` takes, in the table's order."""
    texts = {"prompt": _COMMON["prompt"], **_BY_CLASS.get(cls.__name__, {})}
    for name, text in _COMMON.items():
        texts.setdefault(name, text)
    out = []
    for field in attrs.fields(cls):
        if not field.init:
            continue
        kind, unset, rule = texts.get(field.name, ("?", "?", "undocumented"))
        if field.default is not None and field.default is not attrs.NOTHING:
            unset = ("{}" if isinstance(field.default, Mapping) and not field.default
                     else str(field.default))
        out.append((field.name, kind, unset, rule))
    order = list(texts)
    out.sort(key=lambda row: (row[2] != "required",
                              order.index(row[0]) if row[0] in order else len(order)))
    return out


def field_list(cls: type) -> str:
    """The fields of ``cls`` as plain text that reads at 88 columns (for `help()`)."""
    items = []
    for name, kind, default, rule in rows(cls):
        plain = default in ("required", "not set") or default.startswith("server: ")
        shown = default if plain else f"default {default}"
        items.append(textwrap.fill(f"- ``{name}`` ({kind}, {shown}): {rule}.", 88,
                                   subsequent_indent="  "))
    note = _NOTES.get(cls.__name__)
    return "\n\n".join([textwrap.fill(_INTRO, 88), "\n".join(items), *([note] if note else [])])


def _code_default(text: str) -> str:
    if text in ("required", "not set"):
        return text
    if text.startswith("server: "):
        value = text.removeprefix("server: ")
        return f"server: `{value}`" if " " not in value else text
    return f"`{text}`"


def field_table(cls: type) -> str:
    """The fields of ``cls`` as a Markdown table (for the API reference)."""
    lines = [_HEADER, ("---",) * 4]
    lines += [(f"`{name}`", f"`{kind}`", _code_default(default), rule)
              for name, kind, default, rule in rows(cls)]
    note = _NOTES.get(cls.__name__)
    table = "\n".join("| " + " | ".join(row) + " |" for row in lines)
    return "\n\n".join([_INTRO, table, *([note] if note else [])])


def _signature(cls: type, *, self_: bool) -> inspect.Signature:
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)] if self_ else []
    defaults = {f.name: f.default for f in attrs.fields(cls)}
    for name, kind, unset, _ in rows(cls):
        annotation = kind.replace(" or ", " | ")
        default: object = defaults[name]
        if unset == "required" or default is attrs.NOTHING:
            default = inspect.Parameter.empty
        elif default is None:
            annotation += " | None"
        elif isinstance(default, Mapping):
            default = _Code("{}")
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                        default=default, annotation=_Code(annotation)))
    return inspect.Signature(params, return_annotation=_Code("None") if self_ else
                             inspect.Signature.empty)


def describe(cls: type) -> None:
    """Give ``cls`` its list of fields (in the docstring) and a readable signature."""
    cls.__doc__ = inspect.cleandoc(cls.__doc__ or "") + "\n\n" + field_list(cls)
    # inspect.signature (help(), IDEs) reads __signature__ before the generated __init__.
    setattr(cls, "__signature__", _signature(cls, self_=False))  # noqa: B010
    init = vars(cls)["__init__"]  # the one attrs made for this class
    init.__signature__ = _signature(cls, self_=True)
    init.__doc__ = ("Build the request and check every rule; a broken one raises "
                    "ValidationError naming the field and the rule.")
