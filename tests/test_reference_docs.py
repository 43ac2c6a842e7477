"""What `help()`, the API reference and the package index page show a new user.

- Every request class lists every field it takes (inherited ones included) with a type,
  a default and a rule, in ``help()`` and in the built reference; the list is checked
  against ``attrs.fields`` and against what the class does (a field it requires is
  listed as required, a limit it states is the limit it enforces).
- ``help()`` shows signatures as calls are written, and the clients' ``__init__`` say
  what every argument does; no docstring carries reStructuredText markup that neither
  ``help()`` nor the Markdown reference renders.
- The package metadata has its Project-URLs, consistent with mkdocs.yml, and the README
  (the package index page) links only to absolute URLs that exist and shows how to
  install from the index.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import pydoc
import re
import subprocess
import sys
from html import unescape
from pathlib import Path
from typing import Any

import attrs
import pytest

import wan26_async as wan
from wan26_async import _requests

ROOT = Path(__file__).resolve().parent.parent
REQUESTS = [wan.TextToVideo, wan.ImageToVideo, wan.ReferenceToVideo, wan.VideoRequest]
IMG = "https://example.com/a.png"
#: A valid value for each field a class may require.
SAMPLE: dict[str, Any] = {"prompt": "a robot", "model": "wan-2.6-text-to-video",
                          "image_urls": [IMG]}

_ITEM = re.compile(r"^- ``(?P<name>\w+)`` \((?P<type>[^,]+(?:, [^,()]+\])?), "
                   r"(?P<default>[^)]+)\): (?P<rule>.+)\.$")


def listed_fields(cls: type) -> dict[str, dict[str, str]]:
    """The field list of ``help(cls)``: name -> type, default, rule."""
    doc = inspect.getdoc(cls) or ""
    assert "Fields, all keyword-only." in doc, f"{cls.__name__} lists no fields"
    items: list[str] = []
    for line in doc.partition("Fields, all keyword-only.")[2].splitlines():
        if line.startswith("- "):
            items.append(line)
        elif line.startswith("  ") and items:
            items[-1] += " " + line.strip()
        elif items and not line.strip():
            items.append("")
    fields = {}
    for item in filter(None, items):
        match = _ITEM.match(item)
        assert match, f"{cls.__name__}: cannot read the field line {item!r}"
        fields[match["name"]] = {k: match[k] for k in ("type", "default", "rule")}
    return fields


def init_fields(cls: type) -> list[str]:
    return [f.name for f in attrs.fields(cls) if f.init]


def required(cls: type) -> list[str]:
    return [n for n, f in listed_fields(cls).items() if f["default"] == "required"]


def minimal(cls: type) -> dict[str, Any]:
    """The fewest arguments the list says ``cls`` needs."""
    needed = {n: SAMPLE[n] for n in required(cls)}
    if cls is wan.ReferenceToVideo:  # its note: at least one of image_urls, video_urls
        assert "(*) At least one reference image or video" in (inspect.getdoc(cls) or "")
        needed["image_urls"] = [IMG]
    return needed


# -- the request classes' fields ------------------------------------------------------


@pytest.mark.parametrize("cls", REQUESTS, ids=lambda c: c.__name__)
def test_every_field_of_a_request_is_listed_once_with_a_type_default_and_rule(cls: type) -> None:
    fields = listed_fields(cls)
    assert sorted(fields) == sorted(init_fields(cls))
    doc = inspect.getdoc(cls) or ""
    assert "undocumented" not in doc
    for name, f in fields.items():
        assert f["type"] not in ("?", "object", "Any"), name
        assert f["default"] != "?" and f["rule"], name


@pytest.mark.parametrize("cls", REQUESTS, ids=lambda c: c.__name__)
def test_the_fields_listed_as_required_are_exactly_the_ones_the_class_needs(cls: type) -> None:
    needed = required(cls)
    assert "prompt" in needed
    cls(**minimal(cls))  # nothing else is needed
    for name in needed:
        with pytest.raises((wan.ValidationError, TypeError), match=name):
            cls(**{n: v for n, v in minimal(cls).items() if n != name})


@pytest.mark.parametrize("cls", REQUESTS, ids=lambda c: c.__name__)
def test_literal_defaults_are_the_class_defaults(cls: type) -> None:
    fields = listed_fields(cls)
    for field in attrs.fields(cls):
        if field.init and field.default not in (None, attrs.NOTHING):
            shown = dict(field.default) if field.name == "extra_input" else field.default
            assert fields[field.name]["default"] == f"default {shown}", field.name
        elif field.init and field.default is None:
            assert not fields[field.name]["default"].startswith("default "), field.name
    if cls is not wan.VideoRequest:
        assert fields["model"]["default"] == f"default {cls(**minimal(cls)).model}"


@pytest.mark.parametrize("cls", [wan.TextToVideo, wan.ImageToVideo, wan.ReferenceToVideo],
                         ids=lambda c: c.__name__)
def test_server_defaults_listed_are_the_ones_pricing_assumes(cls: type) -> None:
    fields = listed_fields(cls)
    duration = int(fields["duration"]["default"].removeprefix("server: "))
    resolution = wan.Resolution(fields["resolution"]["default"].removeprefix("server: "))
    assert duration == _requests.DEFAULT_DURATION
    request = cls(**minimal(cls))
    assert request.estimated_credits == _requests.CREDITS_PER_SECOND[resolution] * duration


def _refused(cls: type, **kw: Any) -> bool:
    try:
        cls(**{**minimal(cls), **kw})
    except wan.ValidationError:
        return True
    return False


@pytest.mark.parametrize("cls", REQUESTS, ids=lambda c: c.__name__)
def test_the_limits_a_rule_states_are_the_limits_the_class_enforces(cls: type) -> None:
    fields = listed_fields(cls)
    lo, hi = map(int, re.search(r"(\d+)-(\d+) characters", fields["prompt"]["rule"]).groups())
    assert not _refused(cls, prompt="x" * hi) and _refused(cls, prompt="x" * (hi + 1))
    assert lo == 1 and _refused(cls, prompt=" ")
    (most,) = re.search(r"at most (\d+) characters", fields["negative_prompt"]["rule"]).groups()
    assert not _refused(cls, negative_prompt="x" * int(most))
    assert _refused(cls, negative_prompt="x" * (int(most) + 1))
    lo, hi = map(int, re.search(r"(\d+)-(\d+) seconds", fields["duration"]["rule"]).groups())
    assert not _refused(cls, duration=lo) and not _refused(cls, duration=hi)
    assert _refused(cls, duration=lo - 1) and _refused(cls, duration=hi + 1)
    lo, hi = map(int, re.search(r"(\d+) to (\d+)", fields["seed"]["rule"]).groups())
    assert not _refused(cls, seed=lo) and not _refused(cls, seed=hi)
    assert _refused(cls, seed=lo - 1) and _refused(cls, seed=hi + 1)
    for name, enum in [("resolution", wan.Resolution), ("shot_type", wan.ShotType),
                       ("aspect_ratio", wan.AspectRatio)]:
        if name in fields:
            assert all(m.value in fields[name]["rule"] for m in enum), name
            assert _refused(cls, **{name: "nope"})


def test_the_reference_counts_stated_are_the_ones_enforced() -> None:
    cls = wan.ReferenceToVideo
    fields = listed_fields(cls)
    doc = inspect.getdoc(cls) or ""
    for name, kind in [("image_urls", "png"), ("video_urls", "mp4")]:
        (most,) = map(int, re.search(r"at most (\d+)", fields[name]["rule"]).groups())
        urls = [f"https://example.com/{i}.{kind}" for i in range(most + 1)]
        other = "video_urls" if name == "image_urls" else "image_urls"
        assert not _refused(cls, **{name: urls[:most], other: None})
        assert _refused(cls, **{name: urls, other: None})
    (total,) = map(int, re.search(r"at most (\d+) in all", doc).groups())
    assert _refused(cls, image_urls=[IMG] * (total - 1), video_urls=[IMG, IMG])
    assert not _refused(cls, image_urls=[IMG] * (total - 1), video_urls=[IMG])
    assert _refused(cls, image_urls=None, video_urls=None)  # "at least one"
    image = listed_fields(wan.ImageToVideo)["image_urls"]["rule"]
    assert "exactly 1" in image and _refused(wan.ImageToVideo, image_urls=[IMG, IMG])


@pytest.mark.parametrize("cls", REQUESTS, ids=lambda c: c.__name__)
def test_listed_types_are_what_the_class_stores(cls: type) -> None:
    fields = listed_fields(cls)
    for field in attrs.fields(cls):
        if not field.init:
            continue
        # As written in the class (attrs.resolve_types, run by cattrs, swaps field.type
        # for the evaluated type).
        declared = next(vars(k)["__annotations__"][field.name] for k in cls.__mro__
                        if field.name in vars(k).get("__annotations__", {}))
        stored = str(declared).replace("tuple[str, ...]", "list[str]")
        listed = fields[field.name]["type"]
        for part in (p.strip() for p in stored.split("|")):
            assert part == "None" or part in listed, (field.name, stored, listed)


# -- help() ---------------------------------------------------------------------------


def _help(obj: object) -> str:
    return pydoc.render_doc(obj, renderer=pydoc.plaintext)


@pytest.mark.parametrize("cls", REQUESTS, ids=lambda c: c.__name__)
def test_help_shows_the_signature_as_a_call_is_written(cls: type) -> None:
    text = _help(cls)
    signature = next(line for line in text.splitlines() if f"{cls.__name__}(*," in line)
    for name, f in listed_fields(cls).items():
        annotation = f["type"].replace(" or ", " | ")
        if f["default"] == "required":
            assert re.search(rf"\b{name}: {re.escape(annotation)}(,|\))", signature), name
        else:
            assert re.search(rf"\b{name}: {re.escape(annotation)}( \| None)? = ", signature), name
    model = attrs.fields_dict(cls)["model"].default
    assert "'" not in signature.replace(f"'{model}'", "")  # no 'str'
    assert "= None" not in signature.split("prompt: str")[1][:2]
    lines = text.splitlines()
    init = next(i for i, line in enumerate(lines) if "__init__(self, *," in line)
    assert "Build the request and check every rule" in lines[init + 1]  # not "generated by attrs"


@pytest.mark.parametrize("cls", [wan.AsyncWanClient, wan.WanClient], ids=lambda c: c.__name__)
def test_help_of_a_client_explains_every_argument(cls: type) -> None:
    text = _help(cls)
    assert "Initialize self" not in text
    doc = inspect.getdoc(cls.__init__) or ""  # type: ignore[misc]
    for name in inspect.signature(cls).parameters:
        assert f"``{name}``" in doc, f"{cls.__name__}.__init__ does not explain {name}"


_REST = [
    (re.compile(r"`\\+ "), "a reST escaped space after a role (`APIError`\\ s)"),
    (re.compile(r"(?<!:)::[ \t]*$", re.MULTILINE), "a reST literal-block marker (::)"),
    (re.compile(r":(class|meth|func|attr|exc|mod|obj|data|py:\w+):`"), "a Sphinx role"),
    (re.compile(r"^\s*\.\. [\w-]+::", re.MULTILINE), "a reST directive"),
]


def _modules() -> list[Any]:
    modules = [wan]
    for info in pkgutil.walk_packages(wan.__path__, "wan26_async."):
        if info.name.endswith(".__main__"):  # importing it runs the command
            continue
        try:
            modules.append(importlib.import_module(info.name))
        except ImportError:  # an optional extra that is not installed
            continue
    return modules


def _docstrings() -> list[tuple[str, str]]:
    found = []
    for module in _modules():
        found.append((module.__name__, module.__doc__ or ""))
        for name, obj in vars(module).items():
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue  # a TypeVar's or a constant's __doc__ is its type's
            if obj.__module__ != module.__name__:
                continue
            found.append((f"{module.__name__}.{name}", getattr(obj, "__doc__", None) or ""))
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if inspect.isfunction(member) or isinstance(member, property):
                        doc = getattr(member, "__doc__", None) or ""
                        found.append((f"{module.__name__}.{name}.{attr}", doc))
    return found


def test_no_docstring_carries_rest_markup() -> None:
    problems = [f"{where}: {what}" for where, doc in _docstrings()
                for pattern, what in _REST if pattern.search(doc)]
    assert not problems, "\n".join(problems)


# -- the built reference --------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> str:
    pytest.importorskip("mkdocs", reason="the docs extra builds the reference")
    pytest.importorskip("mkdocstrings_handlers.python")
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--quiet", "--site-dir",
                    str(site)], cwd=ROOT, check=True, timeout=120)
    return (site / "reference" / "index.html").read_text(encoding="utf-8")


def _section(page: str, identifier: str) -> str:
    start = page.index(f'id="{identifier}"')
    end = page.find('<div class="doc doc-object doc-class">', start)
    return page[start:end if end > 0 else None]


def _text(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", "", html))


def test_the_reference_documents_every_public_name_once(reference: str) -> None:
    for name in wan.__all__:
        if name in ("__version__", "request_from_dict") or not name[0].isupper():
            continue
        assert reference.count(f'id="wan26_async.{name}"') == 1, name
    assert "attrs.field(" not in _text(reference)


@pytest.mark.parametrize("cls", REQUESTS, ids=lambda c: c.__name__)
def test_the_reference_lists_every_field_in_a_table(reference: str, cls: type) -> None:
    section = _section(reference, f"wan26_async.{cls.__name__}")
    table = section[section.index("<table"):section.index("</table>")]
    cells = [[_text(c).strip() for c in re.findall(r"<td>(.*?)</td>", row, re.S)]
             for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)]
    listed = listed_fields(cls)
    assert [row[0] for row in cells if row] == list(listed)
    for name, kind, default, rule in (row for row in cells if row):
        assert kind == listed[name]["type"] and rule == listed[name]["rule"]
        assert listed[name]["default"].removeprefix("default ") == default
    signature = _text(section[:section.index("</code></pre>")])
    assert re.search(r"\bprompt: str,", signature)
    if cls is not wan.VideoRequest:
        assert "estimated_credits" in _text(section) and "to_payload" in _text(section)


# -- package metadata and the README ---------------------------------------------------


def _mkdocs_setting(name: str) -> str:
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    match = re.search(rf"^{name}:\s*(\S+)\s*$", text, re.MULTILINE)
    assert match, f"mkdocs.yml has no {name}"
    return match[1]


def _project() -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        tomllib = pytest.importorskip("tomli")
    with (ROOT / "pyproject.toml").open("rb") as f:
        return dict(tomllib.load(f)["project"])


def test_the_package_has_project_urls_for_docs_changelog_source_and_issues() -> None:
    urls = _project()["urls"]
    site, repo = _mkdocs_setting("site_url"), _mkdocs_setting("repo_url")
    assert urls["Documentation"] == site
    assert urls["Source"] == repo
    assert urls["Changelog"] == f"{repo}/blob/main/CHANGELOG.md"
    assert urls["Issues"] == f"{repo}/issues"
    assert all(u.startswith("https://") for u in urls.values())


_LINK = re.compile(r"\]\((?P<md>[^)\s]+)\)|(?:href|src)=\"(?P<html>[^\"]+)\"")


def test_the_readme_links_only_to_absolute_urls_that_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    site, repo = _mkdocs_setting("site_url"), _mkdocs_setting("repo_url")
    targets = [m["md"] or m["html"] for m in _LINK.finditer(readme)]
    assert targets, "the README links to the docs"
    for target in targets:
        assert target.startswith("https://"), f"relative link {target!r} breaks on PyPI"
        if target.startswith(site):
            page = target.removeprefix(site).partition("#")[0].strip("/") or "index"
            assert (ROOT / "docs" / f"{page}.md").is_file(), target
        elif target.startswith(f"{repo}/blob/main/"):
            assert (ROOT / target.removeprefix(f"{repo}/blob/main/")).exists(), target


def test_the_readme_installs_from_the_package_index_and_from_a_clone() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(r"pip install (--upgrade )?wan26-async\b", readme)
    assert "python -m pip install . && wan26 demo" in readme  # the demo from a clone
    assert "python -m nox -s tests" in readme
    assert _project()["readme"] == "README.md"
