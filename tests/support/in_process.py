"""A frontend in this process, its jobs made by the processor's own code in this
process too, without RabbitMQ: the fast seam (issue 36).

The frontend is the real one (its ImageService, cache, hit path, handlers and
accounting, served by Tornado on a loopback port); its resizer runs each job
through the real `Processor.made` (its Renderer: real libvips; its originals
from the real HTTP origin), each job and result through their wire format.
For behaviour of one frontend that a subprocess and a queue prove nothing
more about: negotiation, failure memory, answers' headers. What needs
RabbitMQ, several processes or a crash stays end to end (tests/support/stack.py).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
from pathlib import Path
from typing import Any

import tornado.httpserver
import urllib3

from common.errors import ResizeTimeout
from common.graphite import Graphite
from common.keys import ImageRef, OutputRef
from common.messages import PurgeImage, ResizeJob, ResizeResult
from common.metrics import FrontendFigures, ProcessorFigures
from common.settings import Settings
from common.storage import open_store
from frontend.__main__ import miss_budget
from frontend.accounting import AccessLog, Accounting
from frontend.app import make_app
from frontend.cache import OutputCache
from frontend.hits import CacheHitsFirst
from frontend.rpc import LateReply
from frontend.service import ImageService
from processor import imaging
from processor.worker import Processor
from tests.support.origin import Origin
from tests.support.settings import configured, host_keys


class InProcessResizer:
    """frontend.service.Resizer: each job made by a Processor of this process."""

    def __init__(self, settings: Settings) -> None:
        imaging.configure(threads=1)  # as processor/__main__.py does (its docstring says why)
        store, figures = open_store(settings), ProcessorFigures(0)
        self._processor = Processor(settings, store, Graphite(settings), figures, threading.Event())
        self._jobs = concurrent.futures.ThreadPoolExecutor(settings.processor_prefetch, "job")
        self.jobs: collections.Counter[str] = collections.Counter()  # cache key -> jobs run

    async def call(
        self, job: ResizeJob, timeout_s: float, on_late: LateReply | None = None
    ) -> ResizeResult:
        loop = asyncio.get_running_loop()
        made = loop.run_in_executor(self._jobs, self._made, job.encode(), False)
        try:
            async with asyncio.timeout(timeout_s):
                result = await asyncio.shield(made)
        except TimeoutError as exc:
            if on_late is not None:
                made.add_done_callback(lambda done: on_late(done.result()))  # type: ignore[arg-type]
            raise ResizeTimeout() from exc
        assert result is not None  # a request's job always has a reply
        return result

    async def publish_background(self, job: ResizeJob) -> bool:
        asyncio.get_running_loop().run_in_executor(self._jobs, self._made, job.encode(), True)
        return True

    async def publish_purge(self, purge: PurgeImage) -> bool:
        return True  # one host: the service has purged it here already

    def _made(self, body: bytes, background: bool) -> ResizeResult | None:
        """On a job thread: `body` (a job on the wire) made; its reply, as received."""
        job = ResizeJob.decode(body)
        result = self._processor.made(job, background).result
        self.jobs[job.cache_key] += 1
        return None if result is None else ResizeResult.decode(result.encode())

    def close(self) -> None:
        self._jobs.shutdown(wait=True, cancel_futures=True)
        self._processor.close()


class InProcessFrontend:
    """One frontend of the test config (with `overrides`) on a loopback port."""

    def __init__(self, workdir: Path, origin: Origin, **overrides: Any) -> None:
        self.workdir = workdir
        self.settings = configured(**{**host_keys(workdir, origin.url("")), **overrides})
        self.resizer = InProcessResizer(self.settings)
        self.http = urllib3.PoolManager(maxsize=16, retries=False, timeout=30)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="frontend")
        self._server: tornado.httpserver.HTTPServer | None = None
        self._access_log: AccessLog | None = None

    def start(self) -> InProcessFrontend:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    async def _serve(self) -> None:
        settings = self.settings
        store = open_store(settings) if settings.storage_read_enabled else None
        cache = OutputCache(settings.cache_dir, settings.hot_cache_bytes)
        service = ImageService(settings, cache, self.resizer, store, None, miss_budget(settings))
        self._access_log = AccessLog(settings.access_log_dir / "access_frontend_0.log")
        accounting = Accounting(settings, FrontendFigures(0), self._access_log)
        app = make_app(settings, service, Graphite(settings), accounting)
        self._server = tornado.httpserver.HTTPServer(
            CacheHitsFirst(app, settings, service, accounting)
        )
        self._server.listen(settings.server_port, "127.0.0.1")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.server_port}"

    def get(self, path: str, method: str = "GET", **kwargs: Any) -> urllib3.BaseHTTPResponse:
        return self.http.request(method, self.base_url + path, **kwargs)

    def cached(self, cache_key: str) -> Path:
        """Where the disk cache keeps the output `cache_key` (common/keys.py)."""
        return OutputRef.from_cache_key(cache_key).path_under(self.settings.cache_dir)

    def cached_outputs(self, image_path: str) -> list[Path]:
        """The files of the disk cache's outputs of the image `<model>/<imageType>/<id>`."""
        model, image_type, image_id = image_path.split("/")
        return ImageRef(model, image_type, image_id).cached_outputs_under(self.settings.cache_dir)

    def stop(self) -> None:
        self.http.clear()

        async def close() -> None:
            if self._server is not None:
                self._server.stop()
                await self._server.close_all_connections()
            if self._access_log is not None:
                self._access_log.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self.resizer.close()
