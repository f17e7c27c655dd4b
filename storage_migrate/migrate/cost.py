"""What a real run would send for one file a dry run would copy (the requests by pricing class,
and the bytes), added to the run's meter: a dry run prices the move before it is made."""

from __future__ import annotations

import math

from ..conf import Conf
from ..endpoints.base import Endpoint
from ..endpoints.sources import part_size_for


def predict_copy(src: Endpoint, dst: Endpoint, conf: Conf, size: int, server_side: bool) -> None:
    """Count what copying a file of ``size`` bytes would send (as the engines send it)."""
    meter = dst.meter
    if meter is None:
        return
    if server_side:
        meter.predict("HeadObject")  # the source, headed for the ETag its copy is pinned to
        if size > conf.COPY_CUTOFF:
            parts = math.ceil(size / max(conf.MULTIPART_CHUNKSIZE, math.ceil(size / 10_000)))
            meter.predict("ListMultipartUploads")
            meter.predict("CreateMultipartUpload")
            meter.predict("UploadPartCopy", parts)
            meter.predict("HeadObject")  # the name still free before the parts are joined
            meter.predict("CompleteMultipartUpload")
            # The copy is read once, so that its MD5 is known (and compared with the row's).
            meter.predict("GetObject", received=size)
        else:
            meter.predict("CopyObject")
        meter.predict("HeadObject", 0, in_store=size)
        return
    if src.kind == "s3":
        meter.predict("GetObject", received=size)
    if dst.kind != "s3":
        return
    part_size = part_size_for(size, conf)
    if part_size is None:
        meter.predict("PutObject", sent=size)
        return
    meter.predict("ListMultipartUploads")  # a killed run's leftovers, aborted
    meter.predict("CreateMultipartUpload")
    meter.predict("UploadPart", math.ceil(size / part_size), sent=size)
    meter.predict("HeadObject", 2)  # the name still free; the object verified
    meter.predict("CompleteMultipartUpload")
