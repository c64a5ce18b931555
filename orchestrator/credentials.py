"""Per-account AWS credentials: `[tfo.accounts.X] role_arn` is assumed once per run and account, and
the temporary credentials serve both tfo's state operations (boto3) and terraform (backend and
providers, through the environment)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.config import TfoConfig
from orchestrator.errors import AssumeRoleError as AssumeRoleError  # defined in errors.py, importable here too

if TYPE_CHECKING:  # boto3 costs 0.3 s to import: only runs with account roles pay for it
    import boto3


@dataclass(frozen=True)
class AwsCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str
    expires: float

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
                "AWS_SESSION_TOKEN": self.session_token}

    def session(self, region: str) -> boto3.session.Session:
        import boto3

        return boto3.session.Session(aws_access_key_id=self.access_key_id,
                                     aws_secret_access_key=self.secret_access_key,
                                     aws_session_token=self.session_token, region_name=region)

    def secrets(self) -> list[str]:
        return [self.secret_access_key, self.session_token]


class AccountCredentials:
    """Assumes each account's role when first needed, again shortly before the credentials expire."""

    def __init__(self, cfg: TfoConfig, duration_s: int = 3600) -> None:
        self.cfg = cfg
        self.duration_s = duration_s
        self._cache: dict[str, AwsCredentials] = {}
        self._lock = threading.Lock()

    def for_account(self, account: str, session_name: str) -> AwsCredentials | None:
        settings = self.cfg.accounts.get(account)
        if settings is None or not settings.role_arn:
            return None
        with self._lock:
            cached = self._cache.get(account)
            if cached and cached.expires - time.time() > 600:
                return cached
            import boto3
            from botocore.exceptions import BotoCoreError, ClientError

            sts = boto3.client("sts", region_name=self.cfg.store.region,
                               endpoint_url=self.cfg.store.endpoint_url or None)
            try:
                resp = sts.assume_role(RoleArn=settings.role_arn, RoleSessionName=session_name[:64],
                                       DurationSeconds=self.duration_s)
            except (BotoCoreError, ClientError) as e:
                raise AssumeRoleError(f"assuming {settings.role_arn} for account {account} failed: {e}") from e
            c = resp["Credentials"]
            creds = AwsCredentials(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"],
                                   c["Expiration"].timestamp())
            self._cache[account] = creds
            return creds
