"""Frontend: serves cached outputs, queues resizes for the rest."""

from __future__ import annotations

import asyncio
import logging
import signal

import tornado.httpserver
import tornado.netutil

from common import program
from common.config import Settings
from common.metrics import Metrics
from common.storage import open_store
from frontend.app import make_app, make_status_app
from frontend.cache import OutputCache
from frontend.hits import CacheHitsFirst
from frontend.rpc import ResizeClient
from frontend.service import ImageService

log = logging.getLogger("frontend")


def stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def serve(settings: Settings, process_num: int) -> None:
    rpc = ResizeClient(settings)
    rpc.start()
    store = open_store(settings) if settings.storage_read_enabled else None
    service = ImageService(
        settings, OutputCache(settings.cache_dir, settings.hot_cache_bytes), rpc, store
    )
    # Every frontend process binds the same port; the kernel spreads connections.
    sockets = tornado.netutil.bind_sockets(
        settings.server_port, settings.bind_address, reuse_port=True
    )
    app = make_app(settings, service, Metrics(settings))
    server = tornado.httpserver.HTTPServer(CacheHitsFirst(app, settings, service))
    server.add_sockets(sockets)
    status_server = tornado.httpserver.HTTPServer(make_status_app(service, rpc))
    status_server.listen(settings.status_port + process_num, settings.bind_address)
    log.info("listening on %s:%d", settings.bind_address, settings.server_port)

    await stop_on_signals().wait()
    log.info("stopping: no new connections, finishing requests in flight")
    server.stop()
    status_server.stop()
    give_up = asyncio.get_running_loop().time() + settings.resize_deadline_s
    while service.active_requests and asyncio.get_running_loop().time() < give_up:
        await asyncio.sleep(0.05)
    await server.close_all_connections()
    rpc.close()


def main(argv: list[str] | None = None) -> None:
    args = program.parse_args("Image server frontend", argv)
    settings = program.load_settings(args)
    program.configure_logging(settings, "frontend")
    asyncio.run(serve(settings, args.process_num))
    log.info("stopped")


if __name__ == "__main__":
    main()
