"""wan26-async: the async-first Python SDK for the Wan 2.6 video generation API.

    import wan26_async as wan

    async with wan.AsyncWanClient() as client:          # WAN_API_KEY from the environment
        task = await client.generate(wan.TextToVideo(prompt="a robot in a neon alley"))
        print(task.video_url)
"""

from ._callbacks import CallbackReceiver
from ._client import AsyncWanClient
from ._config import PollPolicy, RetryPolicy
from ._errors import (
    AmbiguousSubmissionError,
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ClientClosedError,
    ConfigurationError,
    InsufficientCreditsError,
    InternalServerError,
    MalformedResponseError,
    ModelNotFoundError,
    NotFoundError,
    NotSubmittedError,
    PermissionDeniedError,
    RateLimitError,
    SpendLimitError,
    TaskFailedError,
    TaskNotFoundError,
    UpstreamError,
    ValidationError,
    WanError,
    WatchTimeoutError,
)
from ._from_dict import request_from_dict
from ._models import Credits, Outcome, Task, TaskEvent, TaskStatus
from ._ratelimit import InProcessRateLimiter, RateLimiter
from ._requests import (
    AspectRatio,
    ImageToVideo,
    ReferenceToVideo,
    Resolution,
    ShotType,
    TextToVideo,
    VideoRequest,
)
from ._sync import WanClient
from ._version import __version__

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AmbiguousSubmissionError",
    "AspectRatio",
    "AsyncWanClient",
    "AuthenticationError",
    "BadRequestError",
    "CallbackReceiver",
    "ClientClosedError",
    "ConfigurationError",
    "Credits",
    "ImageToVideo",
    "InProcessRateLimiter",
    "InsufficientCreditsError",
    "InternalServerError",
    "MalformedResponseError",
    "ModelNotFoundError",
    "NotFoundError",
    "NotSubmittedError",
    "Outcome",
    "PermissionDeniedError",
    "PollPolicy",
    "RateLimitError",
    "RateLimiter",
    "ReferenceToVideo",
    "Resolution",
    "RetryPolicy",
    "ShotType",
    "SpendLimitError",
    "Task",
    "TaskEvent",
    "TaskFailedError",
    "TaskNotFoundError",
    "TaskStatus",
    "TextToVideo",
    "UpstreamError",
    "ValidationError",
    "VideoRequest",
    "WanClient",
    "WanError",
    "WatchTimeoutError",
    "__version__",
    "request_from_dict",
]
