"""Real SeaweedFS S3 server from the session stack, used through boto3."""

from __future__ import annotations

import uuid

import boto3
import pytest
from botocore.exceptions import ClientError

from fleetstream.clients import s3_client
from fleetstream.config import Settings
from fleetstream.local import seaweedfs

pytestmark = pytest.mark.integration


def test_put_list_get(stack_settings: Settings) -> None:
    s3 = s3_client(stack_settings)
    bucket = stack_settings.s3.bucket
    prefix = f"dims-{uuid.uuid4().hex[:8]}/"
    bodies = {
        f"{prefix}car_models.json": b'[{"model_id": 1}]',
        f"{prefix}car_colors.json": b'[{"color_id": 3}]',
    }
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    assert sorted(obj["Key"] for obj in listed["Contents"]) == sorted(bodies)
    for key, body in bodies.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body


def test_wrong_credentials_are_refused(stack_settings: Settings) -> None:
    intruder = boto3.client(
        "s3",
        endpoint_url=stack_settings.s3.endpoint,
        region_name="us-east-1",
        aws_access_key_id="not-a-key",
        aws_secret_access_key="not-a-secret",
    )
    with pytest.raises(ClientError):
        intruder.list_objects_v2(Bucket=stack_settings.s3.bucket)


def test_generated_credentials_are_private(stack_settings: Settings) -> None:
    stored = seaweedfs.seaweed_dir(stack_settings) / "credentials.json"
    assert stored.stat().st_mode & 0o077 == 0


def test_reference_data_published_to_an_s3_prefix(stack_settings: Settings) -> None:
    from fleetstream.reference.catalog import generate_cars
    from fleetstream.reference.publish import publish
    from fleetstream.reference.zones import generate_zones, read_zones

    prefix = f"dims-{uuid.uuid4().hex[:8]}"
    written = publish(stack_settings, f"s3a://{stack_settings.s3.bucket}/{prefix}", generate_cars(30, seed=2))
    assert written == [
        *(f"s3://{stack_settings.s3.bucket}/{prefix}/{name}.json" for name in ("car_models", "car_colors", "cars")),
        f"s3://{stack_settings.s3.bucket}/{prefix}/speed_zones.geojson",
    ]
    zones = s3_client(stack_settings).get_object(Bucket=stack_settings.s3.bucket, Key=f"{prefix}/speed_zones.geojson")
    assert read_zones(zones["Body"].read().decode()) == generate_zones()
    body = s3_client(stack_settings).get_object(Bucket=stack_settings.s3.bucket, Key=f"{prefix}/cars.json")
    lines = body["Body"].read().decode().splitlines()
    assert len(lines) == 30
    assert lines[0].startswith('{"car_id":"car-00000"')


def test_each_service_identity_may_do_only_its_part(stack_settings: Settings) -> None:
    """The local server's identities besides the admin: the pipeline writes the lake, the dashboard
    and the notifications only read it (`run` starts each with its own, FLEETSTREAM_S3__USER)."""
    bucket, key = stack_settings.s3.bucket, f"acl-{uuid.uuid4().hex[:8]}/part-0.parquet"
    pipeline = s3_client(
        stack_settings.model_copy(update={"s3": stack_settings.s3.model_copy(update={"user": "pipeline"})})
    )
    reader = s3_client(
        stack_settings.model_copy(update={"s3": stack_settings.s3.model_copy(update={"user": "dashboard"})})
    )
    pipeline.put_object(Bucket=bucket, Key=key, Body=b"rows")
    assert reader.get_object(Bucket=bucket, Key=key)["Body"].read() == b"rows"
    assert [o["Key"] for o in reader.list_objects_v2(Bucket=bucket, Prefix=key)["Contents"]] == [key]
    for refused in (lambda: reader.put_object(Bucket=bucket, Key=key, Body=b"forged"),
                    lambda: reader.delete_object(Bucket=bucket, Key=key)):  # fmt: skip
        with pytest.raises(ClientError) as denied:
            refused()
        assert denied.value.response["Error"]["Code"] == "AccessDenied"
    pipeline.delete_object(Bucket=bucket, Key=key)
    credentials = sorted(p.name for p in seaweedfs.seaweed_dir(stack_settings).glob("credentials*.json"))
    assert credentials == ["credentials-dashboard.json", "credentials-ops.json", "credentials-pipeline.json",
                           "credentials.json"]  # fmt: skip
