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
from common.storage import ObjectStore, explicit_original_key, image_prefix

log = logging.getLogger(__name__)


def purge_store(settings: Settings, store: ObjectStore, purge: PurgeImage) -> int:
    """Delete the image's objects (outputs, `source=` outputs, its original) and the
    original of its explicit source, if any; how many objects were there."""
    keys = store.keys(image_prefix(settings, purge.model, purge.image_type, purge.id))
    if purge.explicit_source:
        explicit = explicit_original_key(settings, purge.explicit_source)
        keys += [explicit] if store.exists(explicit) else []
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
