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

from common import keys
from common.config import Settings
from common.messages import PurgeImage
from common.storage import ObjectStore

log = logging.getLogger(__name__)


def purge_store(settings: Settings, store: ObjectStore, purge: PurgeImage) -> int:
    """Delete the image's objects (outputs, `source=` outputs, its original) and the
    original of its explicit source, if any; how many objects were there."""
    image = keys.ImageRef(purge.model, purge.image_type, purge.id)
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
    shutil.rmtree(image.outputs_dir(settings), ignore_errors=True)
    for url in purge.source_urls:
        keys.original_path(settings, url).unlink(missing_ok=True)
        keys.master_path(settings, url).unlink(missing_ok=True)
    log.info("purged %s/%s/%s from this host", purge.model, purge.image_type, purge.id)
