"""The ResizeJob of an image request: one recipe for the frontend and the batch tool."""

from __future__ import annotations

import time

from common.keys import ImageRef
from common.messages import ResizeJob
from common.settings import Settings
from common.urls import Fit, ImageRequest, effective_quality


def source_url(settings: Settings, request: ImageRequest) -> str:
    """The original's URL: the `source` given, else the image's default."""
    if request.source is not None:
        return request.source
    return default_source_url(settings, request.image)


def default_source_url(settings: Settings, image: ImageRef) -> str:
    """The URL of the image's original without `source=`: source_domain and the template."""
    path = settings.source_path_template.format(
        model=image.model, image_type=image.image_type, id=image.id
    )
    return settings.source_domain.rstrip("/") + "/" + path


def resize_job(
    settings: Settings,
    request: ImageRequest,
    timeout_s: float,
    background: bool = False,
    replace: bool = False,
    request_id: str = "",
) -> ResizeJob:
    """The job making `request`'s output within `timeout_s`. A background job has no
    queue-wait figure (it waits behind requests by design)."""
    output = request.output
    now = time.time()
    return ResizeJob(
        cache_key=request.cache_key,
        source_url=source_url(settings, request),
        fit=output.fit,
        # h<H>: as wide as the aspect ratio makes it, but no wider than maximum_width.
        width=settings.maximum_width if output.fit is Fit.HEIGHT else output.width,
        height=output.height,
        format=output.format,
        quality=effective_quality(output, settings.default_quality),
        deadline_epoch_s=now + timeout_s,
        # An explicit -q is obeyed; without one, quality_target (when set) decides.
        quality_target=settings.quality_target if output.quality is None else 0.0,
        queued_epoch_s=0.0 if background else now,
        replace=replace,
        request_id=request_id,
        gravity=output.gravity,
        background=output.background,
    )
