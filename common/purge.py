"""Purging one image: every output, its original and its master, on every host and in storage.

`DELETE /<model>/<imageType>/<id>` (signed with `purge_keys`; `?source=` for
an image fetched from an explicit source) on any frontend: the time of the
purge is written to object storage first (the image's purge mark), then the
image's objects there go (so no host refills its cache from them), then its
files on that host, then a PurgeImage on the `image.purge` fanout makes every
frontend and processor of every host remove theirs. The next request is a
miss made from the source's current original.

Puts still on their way when the purge comes (the upload queue, its delay
queues, spilled uploads: minutes of them) would bring objects back. Each
carries when the job that made it began; whoever puts an object of an image
(the uploader, a processor storing an original) looks for the image's purge
mark right after the put, and deletes the object again when the purge came
after that job began. The purge wins whichever ran first: the mark is written
before the purge lists what to delete, so a put either happened before that
listing (and is deleted by it) or is followed by a look that finds the mark.
Clocks of different hosts differ: a put made within PURGE_CLOCK_MARGIN_S
after a purge goes too (the next request makes it again).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from common import keys
from common.file_index import FileIndex
from common.messages import PurgeImage, UploadJob
from common.settings import Settings
from common.storage import ObjectStore

log = logging.getLogger(__name__)
PURGE_CLOCK_MARGIN_S = 5.0
_MARK_TYPE = "text/plain"


def purge_store(settings: Settings, store: ObjectStore, purge: PurgeImage) -> int:
    """Delete the image's objects (outputs, `source=` outputs, its original) and the
    original of its explicit source, if any; how many objects were there."""
    image = keys.ImageRef(purge.model, purge.image_type, purge.id)
    store.put(image.purge_mark_key(settings), f"{time.time():.3f}".encode(), _MARK_TYPE)
    found = store.keys(image.object_prefix(settings))
    if purge.explicit_source:
        explicit = keys.explicit_original_key(settings, purge.explicit_source)
        found += [explicit] if store.exists(explicit) else []
    for key in found:
        store.delete(key)
    return len(found)


def purge_host(settings: Settings, purge: PurgeImage) -> None:
    """Remove the image's files from this host's caches (outputs, originals, masters)."""
    image = keys.ImageRef(purge.model, purge.image_type, purge.id)
    outputs, originals = FileIndex(settings.cache_dir), FileIndex(settings.originals_dir)
    masters = FileIndex(keys.masters_dir(settings))
    for path in image.cached_outputs_under(settings.cache_dir):
        path.unlink(missing_ok=True)
    outputs.removed_starting(image.cached_name_prefix)
    for url in purge.source_urls:
        keys.original_path(settings, url).unlink(missing_ok=True)
        originals.removed(keys.original_path(settings, url))
        keys.master_path(settings, url).unlink(missing_ok=True)
        masters.removed(keys.master_path(settings, url))
    for index in (outputs, originals, masters):
        index.close()
    log.info("purged %s/%s/%s from this host", purge.model, purge.image_type, purge.id)


def put_unless_purged(
    settings: Settings,
    store: ObjectStore,
    put: tuple[str, bytes, str],
    image: keys.ImageRef,
    made_epoch_s: float,
    same_as: Path | None = None,
) -> bool:
    """Put `put` (key, data, content type), made by a job for `image` that began
    at `made_epoch_s`; then, if the image was purged since, delete it again.
    False when the purge won."""
    key, data, content_type = put
    store.put(key, data, content_type, same_as=same_as)
    mark = store.get(image.purge_mark_key(settings))
    if mark is None or made_epoch_s >= float(mark) + PURGE_CLOCK_MARGIN_S:
        return True
    store.delete(key)
    log.info("%s: its image was purged after its job began, not kept", key)
    return False


def store_upload(settings: Settings, store: ObjectStore, upload: UploadJob) -> bool:
    """Put `upload`'s object (unless its image was purged since: False)."""
    put = (upload.key, upload.payload, upload.content_type)
    if not upload.made_for:  # not an image's object
        store.put(*put)
        return True
    image = keys.OutputRef.from_cache_key(upload.made_for).image
    return put_unless_purged(settings, store, put, image, upload.made_epoch_s)
