"""``python -m wan26_async.testing [options]``: run the API emulator until Ctrl-C."""

from ._cli import main

raise SystemExit(main())
