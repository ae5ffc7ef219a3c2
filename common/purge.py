"""Purging one image: every output, its original and its master, on every host and in storage.

`DELETE /<model>/<imageType>/<id>` (signed with `purge_keys`; `?source=` for
an image fetched from an explicit source) on any frontend: the image's
objects in object storage go first (so no host refills its cache from them),
then its files on that host, then a PurgeImage on the `image.purge` fanout
makes every frontend and processor of every host remove theirs. The next
request is a miss made from the source's current original. A resize of the
image already running when the purge comes may still store its output.
"""

from __future__ import annotations

import logging
import shutil

from common import layout
from common.config import Settings
from common.messages import PurgeImage
from common.storage import ObjectStore, original_key, output_key

log = logging.getLogger(__name__)


def purge_store(settings: Settings, store: ObjectStore, purge: PurgeImage) -> int:
    """Delete the image's outputs and originals from object storage; how many objects."""
    prefix = output_key(settings, f"{purge.model}/{purge.image_type}/{purge.id}/")
    keys = store.keys(prefix) + [original_key(settings, url) for url in purge.source_urls]
    for key in keys:
        store.delete(key)
    return len(keys)


def purge_host(settings: Settings, purge: PurgeImage) -> None:
    """Remove the image's files from this host's caches (outputs, originals, masters)."""
    outputs = layout.image_outputs_dir(settings, purge.model, purge.image_type, purge.id)
    shutil.rmtree(outputs, ignore_errors=True)
    for url in purge.source_urls:
        layout.original_path(settings, url).unlink(missing_ok=True)
        layout.master_path(settings, url).unlink(missing_ok=True)
    log.info("purged %s/%s/%s from this host", purge.model, purge.image_type, purge.id)
