"""Read the parameters a risk engine should apply now: follow ``LATEST``, verify, print.

What a consumer must do, in order:

1. read ``<root>/LATEST`` (a small JSON file, replaced atomically) for the partition path;
2. read that partition with :func:`serving.publish.read_partition`, which refuses it unless
   ``_SUCCESS`` matches ``manifest.json`` and every file matches its sha256 in the manifest;
3. check that ``_SUCCESS`` is the one ``LATEST`` vouched for, and that ``LATEST`` itself has
   not moved meanwhile (a newer revision or day is written to a new partition and
   ``LATEST`` repointed: then start again);
4. check the partition's age: a batch job that failed publishes nothing and ``LATEST``
   stays on the last good day, so a consumer must not keep admitting new borrowing on old
   parameters. Older than ``--max-age-days`` (2: until the day's job has run after
   midnight UTC, the newest as-of is the day before yesterday), apply LTV 0 locally (no new
   borrowing or leverage) and keep ``lt``/``lb`` in force, as the job's own fail-safe freeze
   would;
5. apply the rows (``lt``/``lb`` are in force; ``pending_*`` announce a change and its
   effective date); ``updates.json`` lists only the parameters that changed (a withdrawn
   announcement has no new value).

Usage::

    .venv/bin/python examples/read_parameters.py [outputs/forecasts] [--max-age-days N]

Exit status 0 on success, 1 when nothing valid is published (the message says why), 2 when
the newest partition is older than the maximum age (printed, with what to apply).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import pandas as pd

from serving.layout import SUCCESS_NAME, read_latest
from serving.publish import UPDATES_NAME, read_manifest, read_partition

COLUMNS = ["asset", "sigma_1d", "mmf", "imf", "lt", "ltv", "lb", "max_leverage",
           "flag_fallback", "flag_stale", "flag_held", "flag_young"]
# lt / lb are in force now; a pending change becomes lt / lb on pending_effective
PENDING = ["asset", "lt", "pending_lt", "lb", "pending_lb", "pending_effective"]


def latest_parameters(root: Path) -> tuple[Path, pd.DataFrame, dict]:
    """The verified newest partition under ``root``: its path, rows and manifest.

    Raises
    ------
    ValueError
        No ``LATEST`` yet, a partition that fails verification, or one that changed while
        being read.
    """
    pointer = read_latest(root)
    if pointer is None:
        raise ValueError(f"{root / 'LATEST'} does not exist: nothing has been published yet")
    path = root / pointer["path"]
    # a partition of this root only (docs/consumers.md: path is relative to the root): a
    # pointer leading elsewhere ("../x", an absolute path) is refused, not followed
    if not path.resolve().is_relative_to(root.resolve()) or path.resolve() == root.resolve():
        raise ValueError(f"{root / 'LATEST'} points outside {root}: {pointer['path']!r}")
    rows = read_partition(path)  # raises ValueError naming the file on any hash mismatch
    manifest = read_manifest(path)
    if (path / SUCCESS_NAME).read_text().strip() != pointer["success_sha256"]:
        raise ValueError(f"{path} is not the partition LATEST vouched for; read LATEST again")
    if read_latest(root) != pointer:  # partitions are immutable: a newer one moves LATEST
        raise ValueError(f"a newer partition was published while {path} was being read; "
                         "read LATEST again")
    return path, rows, manifest


MAX_AGE_DAYS = 2


def stale_note(as_of: str, today: dt.date, max_age_days: int) -> str | None:
    """What to apply when the partition dated ``as_of`` is older than ``max_age_days`` on
    ``today`` (UTC); None when it is fresh enough."""
    age = (today - dt.date.fromisoformat(as_of)).days
    if age <= max_age_days:
        return None
    return (f"STALE: the newest partition is as of {as_of}, {age} days before {today} "
            f"(> {max_age_days}): the batch job has not published since; apply LTV 0 (no new "
            "borrowing or leverage) and keep lt / lb in force until a fresh partition appears")


def record_line(r: dict) -> str:
    """One ``updates.json`` record as a line (a withdrawn announcement has no new value)."""
    new = "withdrawn" if r["new_value_bps"] is None else f"{r['new_value_bps']} bps"
    return (f"  {r['market']:<6} {r['update_type']:<21} {r['previous_value_bps']!s:>6} bps"
            f" -> {new:>9}  {r['reference_id'][:18]}…")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=Path(argv[0]).name)
    parser.add_argument("root", nargs="?", default="outputs/forecasts")
    parser.add_argument("--max-age-days", type=int, default=MAX_AGE_DAYS)
    args = parser.parse_args(argv[1:])
    root = Path(args.root)
    try:
        path, rows, manifest = latest_parameters(root)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    meta = manifest["metadata"]
    print(f"{path.relative_to(root).as_posix()}  (as_of {manifest['as_of']}, revision "
          f"{manifest.get('revision', 1)}, model {meta.get('model_name')} "
          f"v{meta.get('model_version')}, code {manifest.get('code_version')}; "
          f"sha256 verified for {len(manifest['files'])} files)")
    with pd.option_context("display.width", 160, "display.float_format", "{:.4f}".format):
        print(rows[COLUMNS].to_string(index=False))
        pending = rows[rows["pending_effective"].notna()]
        if len(pending):
            print("announced changes (apply lt / lb above until then):")
            print(pending[PENDING].to_string(index=False))
    updates = path / UPDATES_NAME
    if updates.is_file():
        records = json.loads(updates.read_text())["records"]
        print(f"{len(records)} update records:")
        for r in records:
            print(record_line(r))
    note = stale_note(manifest["as_of"], dt.datetime.now(dt.UTC).date(), args.max_age_days)
    if note:
        print(note, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
