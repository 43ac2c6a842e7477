"""Values that travel: every error class and every result value survives ``pickle`` with
its fields intact (job queues and process pools carry them between processes)."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import wan26_async as wan
from wan26_async._errors import as_ambiguous
from wan26_async.testing import FakeWanServer, Fault


def _package_exception_classes() -> Iterator[type[BaseException]]:
    """Every exception class defined anywhere in the package, found by walking it, so a
    class added later is tested without anyone remembering to list it. Left out: private
    classes (a leading underscore, like the transport's internal retry signal), which never
    leave the module that raises them, and the emulator's own handler errors, which become
    HTTP replies (only what ``wan26_async.testing`` exports reaches a caller)."""
    import wan26_async.testing as testing

    seen: set[type[BaseException]] = set()
    for info in pkgutil.walk_packages(wan.__path__, "wan26_async."):
        if info.name.rsplit(".", 1)[-1] == "__main__":  # runs the command line
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__.startswith("wan26_async")
                    and not name.startswith("_") and obj not in seen
                    and (not obj.__module__.startswith("wan26_async.testing.")
                         or obj in vars(testing).values())):
                seen.add(obj)
                yield obj


CLASSES = sorted(_package_exception_classes(), key=lambda c: (c.__module__, c.__name__))


def _task(status: wan.TaskStatus = wan.TaskStatus.FAILED) -> wan.Task:
    return wan.Task(id="task-1", status=status, status_text=status.value,
                    error="content policy" if status is wan.TaskStatus.FAILED else None,
                    error_code="E1" if status is wan.TaskStatus.FAILED else None,
                    progress=40, model="wan-2.6-text-to-video",
                    raw={"taskId": "task-1", "status": status.value, "nested": [1, {"a": 2}]})


def _api_error(cls: type[wan.APIError]) -> wan.APIError:
    kw: dict[str, Any] = {
        "status_code": 429 if issubclass(cls, wan.RateLimitError) else 503,
        "code": "some_code", "type": "some_type",
        "body": {"error": {"code": "some_code", "message": "nope"}},
        "request_id": "req-7", "headers": {"X-Request-Id": "req-7", "Retry-After": "3"},
    }
    if issubclass(cls, wan.RateLimitError):
        kw["retry_after"] = 3.0
    return cls("nope", **kw)


def _ambiguous_plain() -> wan.AmbiguousSubmissionError:
    err = wan.AmbiguousSubmissionError("a create may have made a task")
    err.idempotency_key = "key-1"
    return err


#: One sample per class that is not an `APIError` (those are built by `_api_error`).
SAMPLES: dict[str, Callable[[], BaseException]] = {
    "WanError": lambda: wan.WanError("something went wrong"),
    "ConfigurationError": lambda: wan.ConfigurationError("no API key"),
    "ValidationError": lambda: wan.ValidationError(
        "duration", "must be 2-15", model="wan-2.6-text-to-video", value=99),
    "APIConnectionError": lambda: wan.APIConnectionError("connection reset"),
    "APITimeoutError": lambda: wan.APITimeoutError("no reply within 5 s"),
    "AmbiguousSubmissionError": _ambiguous_plain,
    "NotSubmittedError": lambda: wan.NotSubmittedError(_api_error(wan.SpendLimitError)),
    "TaskFailedError": lambda: wan.TaskFailedError(_task()),
    "WatchTimeoutError": lambda: wan.WatchTimeoutError(
        "task-1", 2.5, _task(wan.TaskStatus.PROCESSING)),
    "BatchError": lambda: _batch_error(),
    "ClientClosedError": lambda: _closed_error(),
    "CliError": lambda: _cli_error(),
}


def _batch_error() -> BaseException:
    from wan26_async._jobs import BatchError

    return BatchError("jobs.jsonl: 2 invalid line(s)", ["line 1: not JSON", "line 3: bad"])


def _cli_error() -> BaseException:
    from wan26_async.cli._errors import CliError

    return CliError("--concurrency must be >= 1", code="invalid_input", exit_code=2,
                    details=["got 0"])


def _closed_error() -> BaseException:
    return wan.ClientClosedError("this AsyncWanClient is closed")


def sample(cls: type[BaseException]) -> BaseException:
    if issubclass(cls, wan.APIError):
        return _api_error(cls)
    make = SAMPLES.get(cls.__name__)
    if make is None:
        pytest.fail(f"{cls.__module__}.{cls.__name__} has no sample in SAMPLES: add one so "
                    "that its pickling is tested")
    err = make()
    assert type(err) is cls
    return err


def assert_same(a: object, b: object) -> None:
    """Equal as a user would compare them: class, message and every attribute."""
    if isinstance(a, BaseException):
        assert type(b) is type(a)
        assert isinstance(b, BaseException)
        assert b.args == a.args
        assert str(b) == str(a)
        assert sorted(vars(b)) == sorted(vars(a))
        for name, value in vars(a).items():
            assert_same(value, getattr(b, name))
    elif isinstance(a, wan.Task | wan.Credits):
        assert b == a
        assert isinstance(b, wan.Task | wan.Credits)
        assert b.raw == a.raw  # raw is left out of ==
    elif isinstance(a, wan.TaskEvent | wan.Outcome):
        assert type(b) is type(a)
        for name in ("task", "error", "request", "status", "previous", "index"):
            if hasattr(a, name):
                assert_same(getattr(a, name), getattr(b, name))
        assert b == a or isinstance(a, wan.Outcome)  # an Outcome's error has no ==
    else:
        assert b == a


def roundtrip(value: object) -> object:
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        assert_same(value, pickle.loads(pickle.dumps(value, protocol)))
    return pickle.loads(pickle.dumps(value))


def test_the_package_s_exception_classes_are_found() -> None:
    names = {cls.__name__ for cls in CLASSES}
    assert {"WanError", "APIError", "AmbiguousSubmissionError", "TaskFailedError",
            "BatchError", "RateLimitError"} <= names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_exception_class_pickles_with_its_fields(cls: type[BaseException]) -> None:
    err = sample(cls)
    back = roundtrip(err)
    if isinstance(err, wan.APIError):
        assert isinstance(back, wan.APIError)
        assert (back.status_code, back.code, back.type, back.message, back.body,
                back.request_id, back.headers) == (err.status_code, err.code, err.type,
                                                   err.message, err.body, err.request_id,
                                                   err.headers)


@pytest.mark.parametrize(
    "cls", [c for c in CLASSES if issubclass(c, wan.WanError)
            and not issubclass(c, wan.AmbiguousSubmissionError)
            and c is not wan.WanError], ids=lambda c: c.__name__)
def test_every_ambiguous_combined_class_pickles(cls: type[wan.WanError]) -> None:
    err = as_ambiguous(sample(cls), "key-9")  # type: ignore[arg-type]
    assert type(err).__name__ == f"Ambiguous{cls.__name__}"
    back = roundtrip(err)
    assert isinstance(back, cls) and isinstance(back, wan.AmbiguousSubmissionError)
    assert back.idempotency_key == "key-9"
    assert type(back) is type(err)  # the same combined class, not a look-alike


def test_an_ambiguous_error_unpickles_in_a_fresh_process() -> None:
    # The combined class is made at run time: a process that never made it must still
    # get the right class back, with its fields.
    err = as_ambiguous(_api_error(wan.InternalServerError), "key-3")
    script = (
        "import pickle, sys, wan26_async as wan\n"
        "e = pickle.loads(sys.stdin.buffer.read())\n"
        "assert isinstance(e, wan.InternalServerError), type(e)\n"
        "assert isinstance(e, wan.AmbiguousSubmissionError), type(e)\n"
        "print(type(e).__name__, e.status_code, e.code, e.idempotency_key, e.request_id)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], input=pickle.dumps(err),
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split() == ["AmbiguousInternalServerError", "503",
                                            "some_code", "key-3", "req-7"]


def test_values_pickle_with_their_fields() -> None:
    task = _task(wan.TaskStatus.COMPLETED)
    request = wan.TextToVideo(prompt="p", duration=3, resolution="720p",
                              extra_input={"style": {"tone": "warm"}})
    values: list[object] = [
        task,
        wan.TaskEvent(task_id="task-1", status=wan.TaskStatus.COMPLETED,
                      previous=wan.TaskStatus.PROCESSING, task=task, elapsed=1.5),
        wan.Credits(balance=12.5, raw={"balance": 12.5, "currency": "credits"}),
        wan.Outcome(index=3, request=request, task=task),
        wan.Outcome(index=4, request={"model": "m", "input": {"durations": 2}},
                    error=wan.ValidationError("input['durations']", "is not a field")),
        wan.Outcome(index=5, request=request, task=_task(),
                    error=wan.TaskFailedError(_task())),
        request,
        wan.ImageToVideo(prompt="p", image_urls=["https://example.com/a.png"]),
        wan.ReferenceToVideo(prompt="character1", video_urls=["https://example.com/v.mp4"]),
    ]
    for value in values:
        roundtrip(value)
    back = roundtrip(request)
    assert isinstance(back, wan.TextToVideo)
    assert back.to_payload() == request.to_payload()


# -- what the wire really produces ---------------------------------------------------------


async def test_errors_and_values_from_the_emulator_pickle(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    found: list[object] = []
    server.inject("create", Fault.error(500, "internal_error"))
    server.inject("create", Fault.drop_after())
    for _ in range(2):
        with pytest.raises(wan.AmbiguousSubmissionError) as info:
            await client.create_task(wan.TextToVideo(prompt="p"))
        found.append(info.value)
    with pytest.raises(wan.TaskNotFoundError) as missing:
        await client.get_task("no-such-task")
    found.append(missing.value)
    with pytest.raises(wan.TaskFailedError) as failed:
        await client.generate(wan.TextToVideo(prompt="a [fail] video"))
    found.append(failed.value)
    task = await client.create_task(wan.TextToVideo(prompt="slow"))
    with pytest.raises(wan.WatchTimeoutError) as late:
        await client.wait(task.id, timeout=0.005)
    found.append(late.value)
    found.append(await client.get_credits())
    found.extend([event async for event in client.watch(task.id)])
    found.extend([outcome async for outcome in client.fan_out(
        [wan.TextToVideo(prompt="ok"), {"model": "wan-2.6-text-to-video",
                                        "input": {"prompt": "p", "duration": 99}}])])
    names = {type(v).__name__ for v in found}
    assert {"AmbiguousInternalServerError", "AmbiguousAPIConnectionError",
            "TaskNotFoundError", "TaskFailedError", "WatchTimeoutError", "Credits",
            "TaskEvent", "Outcome"} <= names
    for value in found:
        roundtrip(value)
