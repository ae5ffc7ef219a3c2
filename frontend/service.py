"""Turns a parsed request into a cached output.

Looked for in order: the local cache, object storage (results of other
hosts), then one resize for all the requests waiting on the same output.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
import math
import time
import weakref
from typing import Protocol

from common import jobs
from common.errors import (
    BadSignature,
    BrokerUnavailable,
    ImageServerError,
    NotAcceptable,
    OutputGone,
    QueueFull,
    ResizeTimeout,
    StorageUnavailable,
    TooManyMisses,
)
from common.keys import OutputRef
from common.messages import PurgeImage, ResizeJob, ResizeResult
from common.purge import purge_host, purge_store
from common.settings import Settings
from common.signing import verify
from common.sources import allowed_hosts, allowed_ports, check_source_url, normalised_source
from common.storage import ObjectStore, open_store
from common.urls import (
    ImageRequest,
    check_allowed,
    negotiate,
    output_matches,
    parse_output,
    parse_path,
)
from frontend.accounting import HIT, Lookup
from frontend.cache import CachedFile, OutputCache
from frontend.clients import Caller, MissBudget, client_address, trusted_networks
from frontend.failures import FailureMemory
from frontend.popular import Popularity
from frontend.rpc import LateReply

log = logging.getLogger(__name__)
_LOCK_POLL_S = 0.02
_STORE_THREADS = 8  # the object store client blocks: a small pool keeps it off the loop
# A miss is one resize of up to this long on a processor; a longer one (a full_size
# of a large original, an AVIF) costs its client one more miss per such slice.
RESIZE_S_PER_MISS = 0.25


class Resizer(Protocol):
    """Who makes outputs for the service: frontend/rpc.py's ResizeClient (a job on
    RabbitMQ for the processors), or, in tests, the processor's own code run in
    the same process (tests/support/in_process.py)."""

    async def call(
        self, job: ResizeJob, timeout_s: float, on_late: LateReply | None = None
    ) -> ResizeResult:
        """`job`'s result within `timeout_s` (ResizeTimeout; a later one goes to `on_late`)."""
        ...

    async def publish_background(self, job: ResizeJob) -> bool:
        """Queue `job`, nobody waiting for it; False when it could not be queued."""
        ...

    async def publish_purge(self, purge: PurgeImage) -> bool:
        """Tell every host of `purge`; False when they could not be told."""
        ...


class ImageService:
    def __init__(
        self,
        settings: Settings,
        cache: OutputCache,
        rpc: Resizer,
        store: ObjectStore | None,
        popularity: Popularity | None = None,
        budget: MissBudget | None = None,
    ) -> None:
        self._settings = settings
        self._budget = budget
        self._failures = FailureMemory(settings.failure_memory_s)
        self.popularity = popularity
        self._background_queued: dict[str, float] = {}  # cache key -> when (monotonic)
        self._background_tasks: set[asyncio.Task[str]] = set()  # referenced until done
        self._cache = cache
        self._rpc = rpc
        self._store = store
        self._store_pool = concurrent.futures.ThreadPoolExecutor(_STORE_THREADS, "store")
        self.allowed_hosts = allowed_hosts(settings)
        self._allowed_ports = allowed_ports(settings)
        self._trusted_proxies = trusted_networks(settings.trusted_proxies)
        self._in_flight: dict[str, asyncio.Future[tuple[CachedFile, Lookup]]] = {}
        self.active_requests = 0  # kept by the handler; a graceful stop waits for 0
        # Misses found by the cache-hit path, by connection, for the handler it hands them to.
        self.misses_looked_up: weakref.WeakKeyDictionary[object, ImageRequest] = (
            weakref.WeakKeyDictionary()
        )
        self._waiting = 0  # cache misses waiting on a resize, bounded by max_pending_requests

    def parse(self, path: str, source: str | None) -> ImageRequest:
        """The request, validated: grammar (400), served outputs (406), allowed source (403)."""
        request = parse_path(path, source, self._settings.default_quality)
        check_allowed(
            request.output, self._settings.whitelisted_extensions, self._settings.maximum_width
        )
        if request.source is not None:
            self.check_source(request.source)
        return request

    def check_source(self, source: str) -> None:
        """Raise unless `source` is a URL this server may fetch (403)."""
        check_source_url(source, self.allowed_hosts, self._allowed_ports)

    def source_of(self, given: str | None) -> str | None:
        """A request's `source=` in its one spelling (common/sources.py), what its
        signature signs; 403 for a URL that cannot be one."""
        if given is None:
            return None
        return normalised_source(given, self._settings.allowed_source_query)

    def client_of(self, peer: str, forwarded_for: str | None) -> str:
        """The client of a request from `peer` (see frontend/clients.py)."""
        return client_address(peer, forwarded_for, self._trusted_proxies)

    def unsigned_allowed(self, request: ImageRequest) -> bool:
        """May an unsigned request have this output? (allowed_outputs, signing_keys)"""
        settings = self._settings
        image_type = f"{request.model}/{request.image_type}"
        patterns = settings.allowed_outputs_by_type.get(image_type, settings.allowed_outputs)
        if not patterns:
            return not settings.signing_keys
        return output_matches(request.output_name, patterns)

    def authorise(self, request: ImageRequest, signature: str | None, path: str) -> None:
        """Raise unless this request may have its output: a valid signature (any
        output), or an output allowed to unsigned requests (406 otherwise, 403
        with signing_keys)."""
        settings = self._settings
        if settings.signing_keys and signature is not None:
            verify(settings.signing_keys, path, request.source, signature)
            return
        if request.source is not None and settings.source_requires_signature:
            raise BadSignature("a source= URL needs a signed URL on this server")
        if self.unsigned_allowed(request):
            return
        if settings.signing_keys:
            raise BadSignature(f"{request.output_name} needs a signed URL on this server")
        raise NotAcceptable(f"{request.output_name} is not an output this server makes")

    def negotiate(self, request: ImageRequest, accept: str | None) -> ImageRequest:
        """The format served for `request` given its Accept header (auto_formats)."""
        settings = self._settings
        return negotiate(request, accept, settings.auto_formats, settings.default_quality)

    def cache_hit(self, request: ImageRequest) -> CachedFile | None:
        """The output if the local cache has it."""
        return self._cache.read(request.ref)

    async def get(
        self, request: ImageRequest, caller: Caller | None = None, known_miss: bool = False
    ) -> tuple[CachedFile, Lookup]:
        """The output for `request`, from the cache or made now (at most once),
        and where it came from (`known_miss`: the cache was just looked at). A
        resize is taken from the caller's budget (none: work a key authorised)."""
        key = request.cache_key
        cached = None if known_miss else self._cache.read(request.ref)
        if cached is not None:
            return cached, HIT
        self._failures.raise_if_failed(key)
        if self._waiting >= self._settings.max_pending_requests:
            raise QueueFull("this frontend is waiting on too many resizes, retry later")
        self._waiting += 1
        try:
            pending = self._in_flight.get(key)
            if pending is not None:
                made, lookup = await asyncio.shield(pending)
                return made, dataclasses.replace(lookup, coalesced=True)
            # The output as written, not read back: the janitor may evict it at once.
            return await self._produce_once(request, caller)
        finally:
            self._waiting -= 1

    async def _produce_once(
        self, request: ImageRequest, caller: Caller | None
    ) -> tuple[CachedFile, Lookup]:
        key = request.cache_key
        done: asyncio.Future[tuple[CachedFile, Lookup]] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = done
        try:
            cached = await self._produce(request, caller)
            done.set_result(cached)
            return cached
        except BaseException as exc:
            done.set_exception(exc)
            done.exception()  # retrieved: no "never retrieved" noise without followers
            raise
        finally:
            del self._in_flight[key]

    async def _produce(
        self, request: ImageRequest, caller: Caller | None
    ) -> tuple[CachedFile, Lookup]:
        deadline = time.monotonic() + self._settings.resize_deadline_s
        lock = self._cache.lock(request.ref)
        try:
            # Another frontend process of this host may be producing the same
            # output; wait for its lock and then use its file.
            while not lock.try_acquire():
                if time.monotonic() > deadline:
                    raise ResizeTimeout()
                await asyncio.sleep(_LOCK_POLL_S)
            cached = self._cache.read(request.ref)  # made by the lock's last holder
            if cached is not None:
                return cached, Lookup("miss", coalesced=True)
            cached = await self._fill_from_store(request.ref)
            if cached is not None:
                return cached, Lookup("store")
            client = caller.client if caller is not None else None
            self._take_from_budget(client)
            remaining_s = deadline - time.monotonic()
            job = self.job_for(request, remaining_s, caller.request_id if caller else "")
            late = functools.partial(self._late_result, request.ref, client)
            try:
                result = await self._rpc.call(job, remaining_s, late)
            except ResizeTimeout as exc:
                # Asked again, it would only queue another job behind this one.
                self._failures.hold(request.cache_key, exc)
                raise
            self._charge_for(client, result.resize_s)
            try:
                result.raise_for_error()
            except ImageServerError as exc:
                self._failures.remember(request.cache_key, exc)
                raise
            return self._made(request.ref, result), Lookup("miss")
        finally:
            lock.release()

    def _made(self, key: OutputRef, result: ResizeResult) -> CachedFile:
        """A successful result's output: the file a processor of this host wrote to
        the cache (the reply names it), or the reply's bytes, written there."""
        if not result.in_cache:
            return self._cache.write(key, result.payload)
        made = self._cache.written_here(key)
        if made is None:
            raise OutputGone()
        return made

    def _late_result(self, output: OutputRef, client: str | None, result: ResizeResult) -> None:
        """The result of a job whose request timed out: its client pays for the
        processor time all the same, and what it made is kept (a failure
        remembered as any failure is)."""
        key = output.cache_key
        log.info(
            "late result of %s (%.2f s of resize): charged to its client", key, result.resize_s
        )
        self._charge_for(client, result.resize_s)
        self._failures.forget(key)
        try:
            result.raise_for_error()
        except ImageServerError as exc:
            self._failures.remember(key, exc)
            return
        if result.in_cache:
            return  # kept already, by the processor that made it
        try:
            self._cache.write(output, result.payload)
        except (OSError, ImageServerError) as exc:
            log.warning("could not keep the late output %s: %s", key, exc)

    def _take_from_budget(self, client: str | None) -> None:
        if client is None or self._budget is None:
            return
        wait_s = self._budget.take(client)
        if wait_s:
            raise TooManyMisses(
                f"this client asked for more new outputs than this server makes for one "
                f"({self._settings.client_miss_rate_per_s:g}/s)",
                retry_after_s=math.ceil(wait_s),
            )

    def _charge_for(self, client: str | None, resize_s: float) -> None:
        """A resize longer than RESIZE_S_PER_MISS costs its client more misses."""
        extra = resize_s / RESIZE_S_PER_MISS - 1.0
        if client is not None and self._budget is not None and extra > 0:
            self._budget.charge(client, extra)

    async def _fill_from_store(self, output: OutputRef) -> CachedFile | None:
        """Copy the output from object storage into the local cache, if it is there."""
        if self._store is None:
            return None
        key = output.object_key(self._settings)
        try:
            if self._store.reads_are_local:
                data = self._store.get(key)
            else:
                loop = asyncio.get_running_loop()
                data = await loop.run_in_executor(self._store_pool, self._store.get, key)
        except StorageUnavailable as exc:
            log.warning("object storage unavailable, resizing instead: %s", exc.message)
            return None
        if data is None:
            return None
        return self._cache.write(output, data)

    # --- work ahead of requests ---------------------------------------------------

    async def purge(self, purge: PurgeImage) -> int:
        """Purge an image everywhere (see common/purge.py); the objects deleted.
        Raises StorageUnavailable, or BrokerUnavailable when other hosts could not
        be told (this host and object storage are purged by then)."""
        loop = asyncio.get_running_loop()
        store = self._store or open_store(self._settings)
        deleted = await loop.run_in_executor(
            self._store_pool, purge_store, self._settings, store, purge
        )
        self.purged(purge)
        if not await self._rpc.publish_purge(purge):
            raise BrokerUnavailable("purged here and in object storage, but not on other hosts")
        return deleted

    def purged(self, purge: PurgeImage) -> None:
        """Remove this host's files of the image (a DELETE here, or the purge fanout)."""
        purge_host(self._settings, purge)
        prefix = f"{purge.model}/{purge.image_type}/{purge.id}/"
        self._failures.forget(prefix)
        for key in [key for key in self._background_queued if key.startswith(prefix)]:
            del self._background_queued[key]

    def count_request(self, request: ImageRequest) -> None:
        """A GET answered with its output: counted in the request statistics."""
        if self.popularity is not None:
            self.popularity.count(request)

    def after_miss(self, request: ImageRequest) -> None:
        """A new image of its type was just resized for a request: queue the type's
        other popular outputs in the background (called once the answer is sent)."""
        if self.popularity is None or not self._settings.popular_outputs_max:
            return
        for name in self.popularity.popular(request.image.kind):
            if name != request.output_name:
                other = dataclasses.replace(
                    request, output_name=name, output=parse_output(name), varies=False
                )
                task = asyncio.get_running_loop().create_task(self.queue_background(other))
                self._background_tasks.add(task)
                task.add_done_callback(self._background_tasks.discard)

    async def queue_background(self, request: ImageRequest) -> str:
        """Queue `request`'s output as background work: "queued", "existing" (in the
        local cache or object storage, or queued by this frontend within
        background_deadline_s) or "refused" (RabbitMQ would not take it)."""
        key = request.cache_key
        now = time.monotonic()
        queued_at = self._background_queued.get(key)
        if queued_at is not None and now - queued_at < self._settings.background_deadline_s:
            return "existing"
        if self._cache.read(request.ref) is not None or await self._stored(request.ref):
            return "existing"
        job = jobs.resize_job(
            self._settings, request, self._settings.background_deadline_s, background=True
        )
        if not await self._rpc.publish_background(job):
            log.warning("background job for %s refused (RabbitMQ down, alarm, or full)", key)
            return "refused"
        self._background_queued[key] = now
        if len(self._background_queued) > 100_000:  # forget the first half queued
            for old in list(self._background_queued)[:50_000]:
                del self._background_queued[old]
        return "queued"

    async def _stored(self, output: OutputRef) -> bool:
        if self._store is None:
            return False
        key = output.object_key(self._settings)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._store_pool, self._store.exists, key)
        except StorageUnavailable:
            return False  # queued: the processor looks again

    def job_for(self, request: ImageRequest, timeout_s: float, request_id: str = "") -> ResizeJob:
        job = jobs.resize_job(self._settings, request, timeout_s, request_id=request_id)
        return dataclasses.replace(job, reply_cache=self._cache.identity)
