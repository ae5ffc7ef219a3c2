"""Frontend: serves cached outputs, queues resizes for the rest."""

from __future__ import annotations

import asyncio
import logging
import signal

import tornado.httpserver
import tornado.netutil

from common import metrics, program
from common.graphite import Graphite
from common.metrics import FrontendFigures
from common.settings import Settings
from common.storage import open_store
from frontend.accounting import AccessLog, Accounting, MalformedRequests
from frontend.app import make_app
from frontend.cache import OutputCache
from frontend.clients import MissBudget
from frontend.hits import CacheHitsFirst
from frontend.popular import Popularity
from frontend.rpc import ResizeClient
from frontend.service import ImageService

log = logging.getLogger("frontend")
_BROKER_WAIT_S = 10.0  # at start; past it hits are served while misses get 503
_IDLE_GRACE_S = 1.0  # a drained frontend waits this long for idle clients' next request
_POLL_S = 0.05


def stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def report_broker_state(rpc: ResizeClient, figures: FrontendFigures) -> None:
    """Keep the broker gauges current (the status server's /health reads them)."""
    while True:
        figures.broker_connected.set(1 if rpc.ready else 0)
        figures.broker_blocked.set(1 if rpc.blocked_reason is not None else 0)
        await asyncio.sleep(0.5)


async def flush_access_log(access_log: AccessLog) -> None:
    while True:
        await asyncio.sleep(AccessLog.FLUSH_S)
        access_log.flush()


async def sync_statistics(popularity: Popularity, interval_s: float) -> None:
    """Save and read the request statistics every interval (object storage: a thread)."""
    loop = asyncio.get_running_loop()
    while True:
        await loop.run_in_executor(None, popularity.sync)
        await asyncio.sleep(interval_s)


async def wait_for_broker(rpc: ResizeClient) -> None:
    """Listen only once misses can be served, or after _BROKER_WAIT_S whatever happens:
    a restarted frontend must not take connections it would answer with 503."""
    give_up = asyncio.get_running_loop().time() + _BROKER_WAIT_S
    while not rpc.ready and asyncio.get_running_loop().time() < give_up:
        await asyncio.sleep(_POLL_S)


async def drain(
    server: tornado.httpserver.HTTPServer, service: ImageService, timeout_s: float
) -> None:
    """Stop taking connections, answer what is in hand, and close each connection
    after its next answer (Connection: close), so no client loses a request.

    The listening socket goes first: from then on the kernel gives new
    connections to the other frontends (they share the port). Clients that
    stay idle are closed after _IDLE_GRACE_S without requests in flight.
    """
    accept_waiting(server)
    server.stop()
    server.conn_params.no_keep_alive = True  # read by every connection at its next request
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout_s
    idle_since = loop.time()
    # HTTPServer keeps its open connections in _connections (Tornado 6.x).
    while server._connections and loop.time() < give_up:
        if service.active_requests:
            idle_since = loop.time()
        elif loop.time() - idle_since > _IDLE_GRACE_S:
            break
        await asyncio.sleep(_POLL_S)
    await server.close_all_connections()


def accept_waiting(server: tornado.httpserver.HTTPServer) -> None:
    """Take the connections the kernel has already queued for the listening
    sockets: closing a listening socket resets them, so their clients would
    lose a request they were promised (their handshake was done)."""
    # HTTPServer keeps its listening sockets in _sockets (Tornado 6.x).
    for listening in list(server._sockets.values()):
        while True:
            try:
                connection, address = listening.accept()
            except (BlockingIOError, InterruptedError):
                break  # none left: the close that follows resets nothing
            except OSError:
                break  # a connection aborted before it was taken, or the socket gone
            server._handle_connection(connection, address)


def miss_budget(settings: Settings) -> MissBudget | None:
    """The host's budget of resizes per client (a file every frontend maps), if any."""
    if not settings.client_miss_rate_per_s:
        return None
    path = settings.cache_dir / ".client-budgets"  # hidden: the janitor leaves it
    return MissBudget(path, settings.client_miss_rate_per_s, settings.client_miss_burst)


async def serve(settings: Settings, process_num: int) -> None:
    figures = FrontendFigures(process_num)
    rpc = ResizeClient(settings)
    rpc.start()
    background = [asyncio.create_task(report_broker_state(rpc, figures))]
    store = open_store(settings) if settings.storage_read_enabled else None
    popularity = None
    if settings.popular_outputs_max:
        popularity = Popularity(settings, store or open_store(settings), process_num)
        background.append(
            asyncio.create_task(sync_statistics(popularity, settings.stats_interval_s))
        )
    cache = OutputCache(settings.cache_dir, settings.hot_cache_bytes)
    service = ImageService(settings, cache, rpc, store, popularity, miss_budget(settings))
    rpc.on_purge = service.purged
    access_log = AccessLog(settings.access_log_dir / f"access_frontend_{process_num}.log")
    background.append(asyncio.create_task(flush_access_log(access_log)))
    accounting = Accounting(settings, figures, access_log)
    MalformedRequests.install(accounting)
    app = make_app(settings, service, Graphite(settings), accounting)
    server = tornado.httpserver.HTTPServer(CacheHitsFirst(app, settings, service, accounting))
    await wait_for_broker(rpc)
    # Every frontend process binds the same port; the kernel spreads connections.
    sockets = tornado.netutil.bind_sockets(
        settings.server_port, settings.bind_address, reuse_port=True
    )
    server.add_sockets(sockets)
    figures.serving.set(1)
    log.info("listening on %s:%d", settings.bind_address, settings.server_port)

    await stop_on_signals().wait()
    log.info("stopping: no new connections, finishing requests in flight")
    figures.serving.set(0)
    await drain(server, service, settings.drain_timeout_s)
    for task in background:
        task.cancel()
    access_log.close()
    rpc.close()


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args, settings = program.start("frontend", "Image server frontend", argv, prog)
    metrics.enable(settings.metrics_dir)
    asyncio.run(serve(settings, args.process_num))
    log.info("stopped")


if __name__ == "__main__":
    main()
