"""A published partition rewritten as an older release would have written it (the tests of
carrying a deployment's state across a schema bump)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from serving import publish


def write_older(partition: Path, dest: Path, version: str, drop: list[str]) -> Path:
    """``partition``'s rows without the columns ``drop``, written to ``dest`` (a new
    partition directory) as schema ``version``: files, hashes and ``_SUCCESS`` as
    :func:`serving.publish.publish_partition` writes them."""
    manifest = json.loads((partition / publish.MANIFEST_NAME).read_text())
    table = pq.read_table(partition / publish.PARQUET_NAME).drop_columns(drop)
    extras = {k: manifest[k] for k in ("revision", "supersedes", "code_version")}
    dest.mkdir(parents=True)
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(publish, "SCHEMA_VERSION", version)
        publish._stage(dest, table, dt.date.fromisoformat(manifest["as_of"]),
                       json.dumps(manifest["metadata"], sort_keys=True), extras, None)
    finally:
        mp.undo()
    return dest
