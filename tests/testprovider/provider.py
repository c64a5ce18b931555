"""Provider `example.com/test/tfotest` with one resource, `tfotest_thing`."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from tf import runner
from tf.iface import (
    Config,
    CreateContext,
    DeleteContext,
    ReadContext,
    Resource,
    State,
    UpdateContext,
)
from tf.schema import Attribute, Schema
from tf.types import Bool, Number, String
from tf.utils import Diagnostics

PROVIDER_TYPE = "tfotest"
PROVIDER_SOURCE = f"example.com/test/{PROVIDER_TYPE}"
PROVIDER_VERSION = "0.1.0"
WORLD_ENV = "TFOTEST_WORLD"
JOURNAL = "journal.log"


class TestProvider:
    def __init__(self) -> None:
        self.world_dir = Path(os.environ.get(WORLD_ENV, "tfotest-world"))

    def get_model_prefix(self) -> str:
        return f"{PROVIDER_TYPE}_"

    def full_name(self) -> str:
        return PROVIDER_SOURCE

    def get_provider_schema(self, diags: Diagnostics) -> Schema:
        return Schema(attributes=[Attribute("world_dir", String(), optional=True)])

    def validate_config(self, diags: Diagnostics, config: Config) -> None:
        pass

    def configure_provider(self, diags: Diagnostics, config: Config) -> None:
        if config.get("world_dir"):
            self.world_dir = Path(config["world_dir"])

    def get_data_sources(self) -> list[Any]:
        return []

    def get_resources(self) -> list[Any]:
        return [Thing]

    def get_functions(self) -> list[Any]:
        return []

    def new_resource(self, klass: Any) -> Any:
        return klass(self)

    def new_data_source(self, klass: Any) -> Any:
        return klass(self)


class Thing(Resource):
    def __init__(self, provider: TestProvider) -> None:
        self.provider = provider

    @classmethod
    def get_name(cls) -> str:
        return "thing"

    @classmethod
    def get_schema(cls) -> Schema:
        return Schema(
            version=1,
            attributes=[
                Attribute("id", String(), computed=True),
                Attribute("name", String(), required=True, requires_replace=True),
                Attribute("content", String(), optional=True),
                Attribute("secret", String(), optional=True, sensitive=True),
                Attribute("fail", Bool(), optional=True),
                Attribute("delay_seconds", Number(), optional=True),
            ],
        )

    def _path(self, name: str) -> Path:
        return self.provider.world_dir / f"{name}.json"

    def _journal(self, event: str, name: str, op: str) -> None:
        """Append to the world's journal: lets tests see when, what and by which terraform each change ran."""
        self.provider.world_dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"t": time.time(), "event": event, "op": op, "name": name, "terraform_pid": os.getppid(),
                           "aws_access_key_id": os.environ.get("AWS_ACCESS_KEY_ID", "")})
        with open(self.provider.world_dir / JOURNAL, "a") as f:
            f.write(line + "\n")

    def _write(self, ctx: CreateContext | UpdateContext, planned: State) -> State | None:
        op = "create" if isinstance(ctx, CreateContext) else "update"
        self._journal("start", planned["name"], op)
        delay = planned.get("delay_seconds") or 0
        if delay:
            time.sleep(float(delay))
        if planned.get("fail"):
            self._journal("fail", planned["name"], op)
            ctx.diagnostics.add_error(
                f"tfotest_thing {planned['name']!r} failed on purpose",
                f"The resource sets fail = true. Its content was: {planned.get('content')}",
            )
            return None
        self.provider.world_dir.mkdir(parents=True, exist_ok=True)
        record = {"name": planned["name"], "content": planned.get("content")}
        tmp = self._path(planned["name"]).with_suffix(".tmp")
        tmp.write_text(json.dumps(record, sort_keys=True))
        tmp.replace(self._path(planned["name"]))
        self._journal("done", planned["name"], op)
        return {**planned, "id": planned["name"]}

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        if self._path(planned["name"]).exists():
            ctx.diagnostics.add_error(f"tfotest_thing {planned['name']!r} already exists")
            return None
        return self._write(ctx, planned)

    def read(self, ctx: ReadContext, current: State) -> State | None:
        path = self._path(current["name"])
        if not path.exists():
            return None
        record = json.loads(path.read_text())
        return {**current, "content": record.get("content")}

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        written = self._write(ctx, planned)
        # A failed update leaves the object as it was, so Terraform keeps the prior state.
        return written if written is not None else current

    def delete(self, ctx: DeleteContext, current: State) -> None:
        self._journal("start", current["name"], "delete")
        delay = current.get("delay_seconds") or 0
        if delay:
            time.sleep(float(delay))
        self._path(current["name"]).unlink(missing_ok=True)
        self._journal("done", current["name"], "delete")

    def upgrade(self, ctx: Any, version: int, old: State) -> State:
        return old


def main() -> None:
    # Like go-plugin providers: ignore the SIGINT sent to the process group and let terraform,
    # which gets the same signal, decide how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    runner.run_provider(TestProvider())  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
