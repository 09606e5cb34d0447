"""Lame-duck shutdown: on SIGTERM, fail readiness at once but keep serving for a drain period,
then let the server stop accepting and finish what is in flight.

Load balancers and Kubernetes only stop routing to an instance after a few failed readiness
probes; a server that stops listening on SIGTERM drops the requests sent in between. So:

1. SIGTERM: `on_drain()` runs immediately (readiness answers 503); the server still listens.
2. After `drain_seconds`: the server's own SIGTERM handler runs (uvicorn: close the listeners,
   finish in-flight requests, run the lifespan shutdown that closes the pools).
3. In-flight requests get `grace_seconds`: when uvicorn's `--timeout-graceful-shutdown` was not
   given, it is set to that, so the process is gone within drain + grace + pool closing.

Works under the plain `uvicorn app.main:app` command: uvicorn installs its handler before the
lifespan starts, and the lifespan wraps it. With `--workers N` the supervisor forwards SIGTERM to
every worker, and each drains this way. SIGINT (Ctrl+C) keeps its immediate behaviour. Where no
server installed a SIGTERM handler (tests driving the lifespan directly), nothing is installed.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from app.core.logging_config import get_logger

log = get_logger(__name__)

SignalHandler = Callable[[int, FrameType | None], Any]


class GracefulShutdown:
    def __init__(
        self, drain_seconds: float, grace_seconds: float, on_drain: Callable[[], None]
    ) -> None:
        self.drain_seconds = drain_seconds
        self.grace_seconds = grace_seconds
        self.on_drain = on_drain
        self.draining = False
        self._original: SignalHandler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def install(self) -> bool:
        """Wrap the server's SIGTERM handler; False when there is none to wrap."""
        if threading.current_thread() is not threading.main_thread():
            return False
        current = signal.getsignal(signal.SIGTERM)
        if not callable(current):
            return False
        self._original = current
        self._loop = asyncio.get_running_loop()
        self._bound_grace_period(current)
        signal.signal(signal.SIGTERM, self._on_sigterm)
        return True

    def _bound_grace_period(self, handler: SignalHandler) -> None:
        # uvicorn's handler is Server.handle_exit; its config decides how long shutdown waits
        # for in-flight requests (forever by default).
        config = getattr(getattr(handler, "__self__", None), "config", None)
        if config is not None and getattr(config, "timeout_graceful_shutdown", 0) is None:
            config.timeout_graceful_shutdown = self.grace_seconds

    def uninstall(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._original is not None and signal.getsignal(signal.SIGTERM) == self._on_sigterm:
            signal.signal(signal.SIGTERM, self._original)
        self._original = None

    def _on_sigterm(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: set the flag now, leave the rest to the event loop.
        if self.draining:
            return
        self.draining = True
        self.on_drain()
        assert self._loop is not None  # nosec B101 # set by install()
        self._loop.call_soon_threadsafe(self._start_drain, sig)

    def _start_drain(self, sig: int) -> None:
        log.warning(
            "shutdown_draining",
            drain_seconds=self.drain_seconds,
            grace_seconds=self.grace_seconds,
        )
        assert self._loop is not None  # nosec B101 # set by install()
        self._timer = self._loop.call_later(self.drain_seconds, self._stop_server, sig)

    def _stop_server(self, sig: int) -> None:
        log.info("shutdown_drain_finished")
        if self._original is not None:
            self._original(sig, None)
