"""What an ingest run did, per file: appended, skipped, refused, and why.

Nothing is dropped silently: every incoming row ends up appended, skipped as an identical
duplicate, or listed (conflict, gap-fill candidate, provider "missing" marker); a batch that
fails validation or a download that fails is named with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from pipelines.ingest.plausibility import Held

__all__ = ["AppendResult", "Conflict", "FileReport", "IngestReport"]


@dataclass(frozen=True)
class Conflict:
    """An incoming value that contradicts the stored one for the same timestamp (not written)."""

    timestamp: str
    column: str
    stored: float
    incoming: float

    def __str__(self) -> str:
        return f"{self.timestamp} {self.column}: stored {self.stored!r}, provider {self.incoming!r}"


@dataclass
class AppendResult:
    """Outcome of offering one page of rows to one file (:func:`.store.append_page`)."""

    appended: int = 0
    duplicates: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    gap_candidates: list[str] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    rejected: str | None = None
    last_timestamp: str | None = None


@dataclass
class FileReport:
    """Everything that happened to one file in one run.

    Attributes
    ----------
    source, file : str
        Connector name and path relative to the data directory.
    appended, duplicates : int
        Rows written; incoming rows identical to stored ones (skipped, idempotent reruns).
    conflicts : list of Conflict
        Incoming values contradicting stored history; the stored value was kept.
    gap_candidates : list of str
        Timestamps older than the last stored row and absent from the file: refused,
        because appending them would rewrite history that consumers may have used.
    missing : list of str
        Provider rows marked missing (FRED ``"."``): skipped, never filled.
    held : list of Held
        Rows held back by the plausibility screen (:mod:`.plausibility`): the implausible
        row with its rule and value, and every later row of the page; none was written, and
        later pages were not requested.
    rejected : str or None
        Why a batch was refused (validation rule, column mismatch, no file); nothing of that
        batch was written, and later pages were not requested.
    error : str or None
        Why the download stopped (:class:`~pipelines.ingest.http.FetchError`, bad payload).
    last_timestamp : str or None
        Last row in the file after the run.
    pages : int
        Pages offered to the store.
    """

    source: str
    file: str
    appended: int = 0
    duplicates: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    gap_candidates: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    rejected: str | None = None
    error: str | None = None
    last_timestamp: str | None = None
    pages: int = 0

    @property
    def ok(self) -> bool:
        """No rejection, no download error, no conflict with stored history, nothing held."""
        return (self.rejected is None and self.error is None and not self.conflicts
                and not self.held)

    def add(self, result: AppendResult) -> None:
        """Fold one page's outcome into this report."""
        self.pages += 1
        self.appended += result.appended
        self.duplicates += result.duplicates
        self.conflicts.extend(result.conflicts)
        self.gap_candidates.extend(result.gap_candidates)
        self.held.extend(result.held)
        self.rejected = result.rejected or self.rejected
        self.last_timestamp = result.last_timestamp or self.last_timestamp

    def problems(self) -> list[str]:
        """One line per thing a human should look at."""
        lines = [f"{self.file}: rejected: {self.rejected}"] if self.rejected else []
        if self.error:
            lines.append(f"{self.file}: download failed: {self.error}")
        lines += [f"{self.file}: conflict (stored value kept): {c}" for c in self.conflicts]
        if self.held:
            first, later = self.held[0], len(self.held) - 1
            lines.append(f"{self.file}: held back, not appended (implausible): {first}"
                         + (f"; {later} later row(s) held after it" if later else ""))
        if self.gap_candidates:
            lines.append(f"{self.file}: {len(self.gap_candidates)} gap-fill candidate(s) "
                         f"refused (older than the last stored row): "
                         f"{', '.join(self.gap_candidates[:5])}")
        return lines


@dataclass
class IngestReport:
    """All files of one run; ``ok`` is what a CLI turns into its exit status."""

    until: str
    files: list[FileReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.files)

    @property
    def appended(self) -> int:
        return sum(f.appended for f in self.files)

    def file(self, relpath: str) -> FileReport:
        """The report of one file, by path relative to the data directory."""
        for report in self.files:
            if report.file == relpath:
                return report
        raise KeyError(f"no report for {relpath}; files: {[f.file for f in self.files]}")

    def problems(self) -> list[str]:
        return [line for f in self.files for line in f.problems()]

    def to_frame(self) -> pd.DataFrame:
        """One row per file: counts, last timestamp and status, for tables and logs."""
        rows = [
            {
                "source": f.source,
                "file": f.file,
                "appended": f.appended,
                "duplicates": f.duplicates,
                "conflicts": len(f.conflicts),
                "gap_candidates": len(f.gap_candidates),
                "missing": len(f.missing),
                "held": len(f.held),
                "last_timestamp": f.last_timestamp,
                "status": "ok" if f.ok else ("error" if f.error else
                                             "rejected" if f.rejected else
                                             "held" if f.held else "conflict"),
            }
            for f in self.files
        ]
        return pd.DataFrame(rows, columns=["source", "file", "appended", "duplicates",
                                           "conflicts", "gap_candidates", "missing",
                                           "held", "last_timestamp", "status"])
