"""docs/requests.md documents every field of every request class, and only those, with
the limits the classes enforce: a field added, renamed or re-limited in code without
the docs (or the other way round) fails here."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

import wan26_async as wan
from wan26_async import _requests

DOC = (Path(__file__).resolve().parent.parent / "docs" / "requests.md").read_text()
CLASSES = (wan.TextToVideo, wan.ImageToVideo, wan.ReferenceToVideo)


def sections() -> dict[str, str]:
    """The text under each ``## `` heading, by heading."""
    parts = re.split(r"^## (.+)$", DOC, flags=re.MULTILINE)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def table_names(text: str, header: str) -> list[str]:
    """The backticked names in the first column of the tables whose header row starts
    with ``| header |``."""
    names: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith(f"| {header} |"):
            inside = True
            continue
        if inside and not line.startswith("|"):
            inside = False
        if inside and not line.startswith("| ---"):
            first = line.split("|")[1].strip()
            names.extend(re.findall(r"`([^`]+)`", first))
    return names


def fields(cls: type) -> set[str]:
    return {f.name for f in attrs.fields(cls) if f.init and not f.name.startswith("_")}


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_field_of_each_class_is_in_its_tables_and_nothing_else(cls: type) -> None:
    parts = sections()
    common = table_names(parts["Fields of all three classes"], "Field")
    own = table_names(parts[cls.__name__], "Field")
    documented = common + own
    assert len(documented) == len(set(documented)), f"a field listed twice: {documented}"
    assert set(documented) == fields(cls), (
        f"in the docs, not the class: {set(documented) - fields(cls)}; "
        f"in the class, not the docs: {fields(cls) - set(documented)}")


def test_the_model_table_names_each_class_default() -> None:
    rows = dict(re.findall(r"^\| `wan\.(\w+)` \| `([^`]+)` \|$", DOC, flags=re.MULTILINE))
    assert rows == {cls.__name__: attrs.fields_dict(cls)["model"].default for cls in CLASSES}


def test_the_enum_table_lists_every_member_and_value() -> None:
    table = sections()["Enums"]
    documented: dict[str, dict[str, str]] = {}
    enum = ""
    for name, member, value in re.findall(
            r"^\| (?:`wan\.(\w+)`)? *\| `(\w+)` \| `\"([^\"]+)\"` \|$", table,
            flags=re.MULTILINE):
        enum = name or enum
        documented.setdefault(enum, {})[member] = value
    assert documented == {
        e.__name__: {m.name: m.value for m in e}
        for e in (wan.Resolution, wan.AspectRatio, wan.ShotType)
    }


@pytest.mark.parametrize(("text", "limit"), [
    ("at most {} characters", _requests.MAX_PROMPT),
    ("a string of at most {} characters", _requests.MAX_NEGATIVE_PROMPT),
    ("an integer from 0 to {}", _requests.MAX_SEED),
    ("2 to {} for text- and image-to-video", wan.TextToVideo._MAX_DURATION),
    ("**2 to {}** for reference-to-video", wan.ReferenceToVideo._MAX_DURATION),
    ("| required; **exactly {}** URL", 1),
    ("| at most {}; see", wan.ReferenceToVideo.MAX_IMAGES),
    ("| at most {}; see", wan.ReferenceToVideo.MAX_VIDEOS),
])
def test_the_documented_limits_are_the_enforced_ones(text: str, limit: int) -> None:
    assert text.format(limit) in DOC, f"docs/requests.md should say {text.format(limit)!r}"


def test_the_image_to_video_limit_is_the_one_enforced() -> None:
    # "exactly 1" above is the documented rule: two images are refused, naming the field
    with pytest.raises(wan.ValidationError, match="image_urls"):
        wan.ImageToVideo(prompt="x", image_urls=["https://e.com/a.png", "https://e.com/b.png"])
