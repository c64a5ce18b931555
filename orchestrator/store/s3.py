"""Production store: S3 (any S3-compatible endpoint) with server-side encryption, DynamoDB for locks."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from orchestrator import keys
from orchestrator.config import StoreConfig
from orchestrator.errors import StoreError
from orchestrator.store.base import KeyStamp, ObjectInfo, Store

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client

# Fail fast on an unreachable endpoint instead of botocore's long default retry ladder.
BOTO_CONFIG = BotoConfig(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"})


def _missing(e: ClientError) -> bool:
    return e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")


class S3Store(Store):
    kind = "s3"

    def __init__(self, cfg: StoreConfig, session: boto3.session.Session | None = None) -> None:
        self.cfg = cfg
        self.bucket = cfg.bucket
        self.audit_bucket = cfg.audit_bucket or cfg.bucket
        session = session or boto3.session.Session()
        endpoint = cfg.endpoint_url or None
        self.s3: S3Client = session.client("s3", region_name=cfg.region, endpoint_url=endpoint, config=BOTO_CONFIG)
        self.dynamodb: DynamoDBClient = session.client(
            "dynamodb", region_name=cfg.region, endpoint_url=endpoint, config=BOTO_CONFIG
        )

    def _sse(self) -> dict[str, str]:
        if self.cfg.sse == "aws:kms":
            args = {"ServerSideEncryption": "aws:kms"}
            if self.cfg.kms_key_id:
                args["SSEKMSKeyId"] = self.cfg.kms_key_id
            return args
        return {"ServerSideEncryption": "AES256"}

    def _bucket(self, key: str) -> str:
        return self.audit_bucket if keys.is_audit(key) else self.bucket

    def _fail(self, what: str, key: str, e: Exception) -> StoreError:
        return StoreError(f"{what} s3://{self.bucket}/{key} failed: {e}")

    def put(self, key: str, data: bytes, *, metadata: dict[str, str] | None = None) -> None:
        # Every object is encrypted at rest (SSE), whatever its namespace.
        try:
            self.s3.put_object(Bucket=self._bucket(key), Key=key, Body=data, Metadata=metadata or {},
                               **self._sse())  # type: ignore[arg-type]
        except (BotoCoreError, ClientError) as e:
            raise self._fail("writing", key, e) from e

    def get(self, key: str) -> bytes:
        try:
            return self.s3.get_object(Bucket=self._bucket(key), Key=key)["Body"].read()
        except ClientError as e:
            if _missing(e):
                raise KeyError(key) from None
            raise self._fail("reading", key, e) from e
        except BotoCoreError as e:
            raise self._fail("reading", key, e) from e

    def head(self, key: str) -> ObjectInfo | None:
        try:
            r = self.s3.head_object(Bucket=self._bucket(key), Key=key)
        except ClientError as e:
            if _missing(e):
                return None
            raise self._fail("inspecting", key, e) from e
        except BotoCoreError as e:
            raise self._fail("inspecting", key, e) from e
        return ObjectInfo(key=key, size=r.get("ContentLength", 0), last_modified=str(r.get("LastModified", "")),
                          metadata=dict(r.get("Metadata", {})), encrypted=str(r.get("ServerSideEncryption", "")))

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        out: list[ObjectInfo] = []
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self._bucket(prefix), Prefix=prefix):
                for o in page.get("Contents", []):
                    info = self.head(o["Key"])
                    if info:
                        out.append(info)
        except (BotoCoreError, ClientError) as e:
            raise self._fail("listing", prefix, e) from e
        return out

    def list_keys(self, prefix: str, start_after: str = "") -> list[KeyStamp]:
        out: list[KeyStamp] = []
        try:
            pages = self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket(prefix), Prefix=prefix, StartAfter=start_after)
            for page in pages:
                out.extend(KeyStamp(o["Key"], str(o.get("ETag", ""))) for o in page.get("Contents", []))
        except (BotoCoreError, ClientError) as e:
            raise self._fail("listing", prefix, e) from e
        return out

    def list_children(self, prefix: str, start_after: str = "") -> list[str]:
        out: list[str] = []
        try:
            pages = self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket(prefix), Prefix=prefix, Delimiter="/", StartAfter=start_after)
            for page in pages:
                out.extend(p["Prefix"][len(prefix):] for p in page.get("CommonPrefixes", []))
                out.extend(o["Key"][len(prefix):] for o in page.get("Contents", []))
        except (BotoCoreError, ClientError) as e:
            raise self._fail("listing", prefix, e) from e
        return sorted(out)

    def delete(self, key: str) -> None:
        try:
            self.s3.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as e:
            raise self._fail("deleting", key, e) from e

    # --- state ----------------------------------------------------------------------------------
    def read_state(self, state_key: str) -> bytes | None:
        try:
            data = self.get(state_key)
        except KeyError:
            return None
        return data or None

    def _copy_state_to_backup(self, state_key: str, backup_key: str, metadata: dict[str, str]) -> str:
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=state_key)
            version = str(head.get("VersionId") or "")
            source: dict[str, Any] = {"Bucket": self.bucket, "Key": state_key}
            if version and version != "null":
                source["VersionId"] = version
            self.s3.copy_object(
                Bucket=self.bucket,
                Key=backup_key,
                CopySource=source,  # type: ignore[arg-type]
                MetadataDirective="REPLACE",
                Metadata={**metadata, "source-version-id": version},
                **self._sse(),  # type: ignore[arg-type]
            )
        except (BotoCoreError, ClientError) as e:
            raise self._fail("backing up", state_key, e) from e
        return version

    def _digest_id(self, state_key: str) -> str:
        # Terraform's S3 backend keeps the state's MD5 under this LockID and refuses a state that
        # does not match it, so a restore must update it.
        return f"{self.bucket}/{state_key}-md5"

    def restore_state(self, state_key: str, data: bytes | None) -> None:
        try:
            if data is None:
                self.s3.delete_object(Bucket=self.bucket, Key=state_key)
                if self.cfg.lock_table:
                    self.dynamodb.delete_item(TableName=self.cfg.lock_table,
                                              Key={"LockID": {"S": self._digest_id(state_key)}})
                return
            self.s3.put_object(Bucket=self.bucket, Key=state_key, Body=data, **self._sse())  # type: ignore[arg-type]
            if self.cfg.lock_table:
                self.dynamodb.put_item(
                    TableName=self.cfg.lock_table,
                    Item={"LockID": {"S": self._digest_id(state_key)},
                          "Digest": {"S": hashlib.md5(data, usedforsecurity=False).hexdigest()}},
                )
        except (BotoCoreError, ClientError) as e:
            raise self._fail("restoring", state_key, e) from e

    # --- terraform backend ----------------------------------------------------------------------
    def backend_files(self, state_key: str) -> dict[str, str]:
        return {}

    def backend_config(self, state_key: str, region: str) -> dict[str, str]:
        pairs = {"bucket": self.bucket, "key": state_key, "region": self.cfg.region, "encrypt": "true"}
        if self.cfg.lock_table:
            pairs["dynamodb_table"] = self.cfg.lock_table
        if self.cfg.sse == "aws:kms" and self.cfg.kms_key_id:
            pairs["kms_key_id"] = self.cfg.kms_key_id
        return pairs

    def describe(self) -> str:
        return f"s3://{self.bucket}"
