"""``create_app``: the Litestar application around one ``Broker`` (no module globals)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from broker.errors import BrokerError, PolicyInvalid
from broker.http.hot_paths import HOT_ROUTES, BrokerApp
from broker.http.problems import broker_error_handler, http_exception_handler
from broker.http.routes import HANDLERS
from broker.repeat_log import RepeatLog
from broker.service import admin
from broker.service.broker import Broker, Call
from broker.service.policy_follower import PolicyFollower
from broker.service.readiness import Readiness, self_test

log = logging.getLogger("broker")

MAX_BODY_BYTES = 64 * 1024
SELF_TEST_RETRY_SECONDS = 1.0


async def _self_test_until_ready(broker: Broker) -> None:
    """Run the start-up self-test; keep retrying while it fails (readiness says so). The
    log names the cause; the same cause again is logged with backoff (``RepeatLog``)."""
    failures = RepeatLog()
    while True:
        try:
            await self_test(broker)
        except BrokerError as e:
            line = failures.failure(
                f"signing self-test failed ({e.code}: {e.reason}); not minting until it passes", time.monotonic()
            )
            if line is not None:
                log.error(line)  # noqa: TRY400 -- the cause in one line, not a traceback
            await asyncio.sleep(SELF_TEST_RETRY_SECONDS)
        else:
            broker.ready_for_signing = True
            log.info("signing self-test passed")
            return


async def reload_on_signal(broker: Broker) -> None:
    try:
        await admin.reload(broker, Call("sighup", None), trigger="sighup")
        log.info("policy reloaded on SIGHUP: %s", broker.policy.digest)
    except PolicyInvalid as e:
        log.error("policy reload on SIGHUP refused, the policy in force is kept: %s", e.reason)  # noqa: TRY400
    except BrokerError as e:
        log.error("policy reload on SIGHUP failed (%s)", e.code)  # noqa: TRY400


def _keep(tasks: set[asyncio.Task[Any]], task: asyncio.Task[Any]) -> None:
    """Hold a reference to a background task until it is done (the loop keeps only weak ones)."""
    tasks.add(task)
    task.add_done_callback(tasks.discard)


def create_app(
    broker: Broker,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    handle_sighup: bool = False,
    hot_paths: bool = True,
    ready_wait: float = 0.0,
    freeze_heap: bool = False,
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
) -> BrokerApp:
    """The ASGI app: the hot paths (``broker.http.hot_paths``) in front of the Litestar app.
    ``hot_paths=False`` routes everything through Litestar (the hot paths' parity tests).

    ``ready_wait``: how long start-up waits for the signing self-test before the server
    takes requests. A worker sharing a port with others gets connections from the kernel
    as soon as its socket listens; waiting here queues them until it can sign, instead of
    answering 503. Past the wait it serves anyway (not ready) and keeps retrying.

    ``freeze_heap``: once started, move every object built so far out of the garbage
    collector's generations (``gc.freeze``), for a process that serves one app for life.

    ``background``: tasks run for the app's life and cancelled at shutdown (the audit archiver).
    """
    litestar = _litestar_app(
        broker,
        max_body_bytes=max_body_bytes,
        handle_sighup=handle_sighup,
        ready_wait=ready_wait,
        freeze_heap=freeze_heap,
        background=background,
    )
    return BrokerApp(litestar, broker, max_body_bytes=max_body_bytes, routes=HOT_ROUTES if hot_paths else {})


#: how long each step of shutting down may take: a process asked to stop stops, and says
#: which step did not finish (a backend that never answers must not hold it forever)
SHUTDOWN_STEP_WAIT = 10.0


async def _bounded(step: Awaitable[Any], what: str) -> None:
    """Wait for ``step`` (a task already cancelled, or a coroutine) at most
    ``SHUTDOWN_STEP_WAIT`` seconds; its errors are the step's own (logged where it runs)."""
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=SHUTDOWN_STEP_WAIT)  # never waits past it, unlike wait_for
    if not done:
        log.error("shutdown: %s did not finish within %gs; going on", what, SHUTDOWN_STEP_WAIT)
        return
    if not task.cancelled() and task.exception() is not None:
        log.error("shutdown: %s failed (%s)", what, type(task.exception()).__name__)


def _litestar_app(
    broker: Broker,
    *,
    max_body_bytes: int,
    handle_sighup: bool,
    ready_wait: float,
    freeze_heap: bool,
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
) -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        tasks: set[asyncio.Task[Any]] = set()
        starter = asyncio.create_task(_self_test_until_ready(broker), name="the signing self-test")
        if ready_wait > 0:
            await asyncio.wait({starter}, timeout=ready_wait)
        if freeze_heap:
            # Everything built so far lives as long as the process: out of the collector's
            # reach, full collections stop rescanning it (the p99 tail under load).
            gc.collect()
            gc.freeze()
        follower = asyncio.create_task(PolicyFollower(broker).run(), name="the peer-reload follower")
        checkpoints = broker.checkpoints
        checkpointer = (
            asyncio.create_task(checkpoints.run(), name="the checkpointer") if checkpoints is not None else None
        )
        others = [
            asyncio.create_task(run(), name=getattr(run, "__qualname__", "a background task")) for run in background
        ]
        loop = asyncio.get_running_loop()
        if handle_sighup:
            loop.add_signal_handler(signal.SIGHUP, lambda: _keep(tasks, loop.create_task(reload_on_signal(broker))))
        try:
            yield
        finally:
            if handle_sighup:
                loop.remove_signal_handler(signal.SIGHUP)
            for running in (starter, follower, checkpointer, *others):
                if running is not None:
                    running.cancel()
                    await _bounded(running, f"stopping {running.get_name()}")
            for task in tasks:
                task.cancel()
            if checkpoints is not None:
                await _bounded(checkpoints.close(), "the last audit checkpoint")  # anchor what this process wrote last
            await _bounded(broker.aclose(), "closing the backends")

    return Litestar(
        route_handlers=HANDLERS,
        state=State({"broker": broker, "readiness": Readiness(broker)}),
        lifespan=[lifespan],
        exception_handlers={
            BrokerError: broker_error_handler,
            HTTPException: http_exception_handler,
            Exception: http_exception_handler,
        },
        request_max_body_size=max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="capbroker",
            version="0.1.0",
            description="Capability-scoped credentials for AI agents (docs/api.md).",
            path="/schema",
            render_plugins=[JsonRenderPlugin(), SwaggerRenderPlugin()],  # /schema/openapi.json, /schema/swagger
            components=Components(
                security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")},
            ),
        ),
        debug=False,
    )
