"""A griffe extension: the API reference shows what ``help()`` shows, not the source text.

mkdocstrings reads the package's source, where an attrs class has no ``__init__`` and
its fields read ``attrs.field(default=None, converter=...)``. This extension imports the
package and, for each class and function it documents, takes from the live object:

- the signature of an attrs class (the one ``inspect.signature`` gives: for the request
  classes, required fields without a default and the types one passes);
- for the request classes, the table of every field (type, default, rule) in place of
  one entry per field, as ``wan26_async._fielddoc`` writes it;
- the default of an attrs field (``0.0``, not ``attrs.field(default=0.0, ...)``);
- a default written as a constant's name (``timeout: float = DEFAULT_TIMEOUT``) as its
  value (``60.0``).

Enabled in mkdocs.yml (``extensions:`` of the python handler).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import attrs
import griffe

from wan26_async._fielddoc import field_table

_LITERALS = (bool, int, float, str)


def _live(obj: griffe.Object) -> Any:
    """The runtime object ``obj`` documents, or None."""
    parts = obj.canonical_path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            value = getattr(value, name, None)
        return value
    return None


def _text(value: Any) -> str | None:
    if value is inspect.Parameter.empty:
        return None
    return value if isinstance(value, str) else inspect.formatannotation(value)


def _default_text(default: Any) -> str | None:
    """An attrs default as source text: ``0.0``, ``{}`` for ``factory=dict``."""
    if default is attrs.NOTHING or default is inspect.Parameter.empty:
        return None
    if isinstance(default, attrs.Factory):
        if default.takes_self:
            return "..."
        return repr(default.factory())
    return repr(default)


def _init_from(cls: griffe.Class, live: type) -> None:
    signature = inspect.signature(live)
    fields = attrs.fields_dict(live)
    params = [griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword)]
    for p in signature.parameters.values():
        default = p.default
        if default is attrs.NOTHING and p.name.lstrip("_") in fields:  # a factory
            default = fields[p.name.lstrip("_")].default
        params.append(griffe.Parameter(
            p.name,
            annotation=_text(p.annotation),
            kind=griffe.ParameterKind(p.kind.description),
            default=_default_text(default),
        ))
    init = griffe.Function("__init__", lineno=0, endlineno=0, parent=cls,
                           parameters=griffe.Parameters(*params), returns="None")
    cls.set_member("__init__", init)


def _field_values(cls: griffe.Class, live: type) -> None:
    """``x: float = 0.0``, not ``x: float = attrs.field(default=0.0, validator=...)``."""
    for field in attrs.fields(live):
        member = cls.members.get(field.name)
        if member is None or not member.is_attribute or member.is_alias:
            continue
        member.value = _default_text(field.default)


def _literal_defaults(function: griffe.Function, live: Any) -> None:
    try:
        signature = inspect.signature(live)
    except (TypeError, ValueError):
        return
    for param in function.parameters:
        runtime = signature.parameters.get(param.name)
        if runtime is None or not isinstance(param.default, griffe.ExprName):
            continue
        if isinstance(runtime.default, _LITERALS) and runtime.default is not None:
            param.default = repr(runtime.default)


class RuntimeSignatures(griffe.Extension):
    """Signatures, field tables and defaults from the live objects (see the module)."""

    def on_class(self, *, cls: griffe.Class, **kwargs: Any) -> None:
        live = _live(cls)
        if not isinstance(live, type):
            return
        if attrs.has(live):
            if "__init__" not in cls.members:
                _init_from(cls, live)
            _field_values(cls, live)
        if "__signature__" in vars(live):  # a request class: see wan26_async._fielddoc
            for field in attrs.fields(live):
                if field.name in cls.members and cls.members[field.name].is_attribute:
                    cls.del_member(field.name)
            static = cls.docstring.value if cls.docstring else ""
            cls.docstring = griffe.Docstring(f"{static}\n\n{field_table(live)}", parent=cls)

    def on_function(self, *, func: griffe.Function, **kwargs: Any) -> None:
        live = _live(func)
        if callable(live):
            _literal_defaults(func, live)
