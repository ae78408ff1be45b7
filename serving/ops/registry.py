"""The policy in the MLflow model registry: log as models-from-code, register, move aliases.

A new version gets ``@challenger``; :func:`promote` moves ``@champion`` to it when the gate
passes. Every alias move is appended to the registered model's tags as
``alias_history.<alias>.<UTC timestamp>`` = ``{"version": ..., "reason": ...}``: MLflow keeps
only the current alias, these tags keep the whole history, so "which version was champion on
date D" (:func:`version_at`) and a rollback (:func:`rollback`) are one call each.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import platform
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import mlflow
import yaml
from mlflow import MlflowClient
from mlflow.models import ModelSignature
from mlflow.types.schema import ParamSchema, ParamSpec
from packaging.requirements import InvalidRequirement, Requirement

import serving.policy_model
from serving.ops.lock import waiting

CHALLENGER = "challenger"
CHAMPION = "champion"
_REQUIREMENTS = ("mlflow", "pandas", "numpy", "scipy", "arch", "torch", "lightning", "pydantic")


# Files of a logged policy model whose sha256 is recorded as a version tag at registration and
# checked before the model's code is imported: the source file runs with the server's rights,
# and ``MLmodel`` names which file that is (``model_code_path``) and what goes on the import
# path (``code``), so it is checked too.
INTEGRITY_FILES = {"integrity.policy_model.sha256": "policy_model.py",
                   "integrity.policy_bundle.sha256": "artifacts/policy_bundle.json",
                   "integrity.mlmodel.sha256": "MLmodel"}
CODE_LOADER = "mlflow.pyfunc.loaders.code_model"
ORPHAN_TAG = "orphan"


class ChampionMissingError(LookupError):
    """No ``@champion`` alias on the registered policy: nothing may be served."""


class ModelArtifactMissingError(FileNotFoundError):
    """A registered version's stored files are gone; the message names version and paths."""


class ModelIntegrityError(RuntimeError):
    """A stored file of a registered version differs from the hash recorded at registration."""


def _requirements() -> list[str]:
    return [f"{name}=={metadata.version(name)}" for name in _REQUIREMENTS]


def environment_mismatches(directory: Path) -> list[str]:
    """What ``mlflow.pyfunc.load_model`` warns of, checked without its scan of every installed
    distribution (~0.8 s of a fresh serve): the stored model's requirements
    (``requirements.txt``) this environment does not satisfy, and a Python major.minor other
    than the one it was logged with (``MLmodel``). The serve loads the model with mlflow's own
    check off and reports these as notes and in the partition's metadata.
    """
    found: list[str] = []
    try:
        lines = (directory / "requirements.txt").read_text().splitlines()
    except OSError as err:
        return [f"{directory / 'requirements.txt'} unreadable ({err}): environment not checked"]
    for line in lines:
        try:
            req = Requirement(line.strip())
        except InvalidRequirement:  # blank, comment, path or URL: mlflow skips these too
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            found.append(f"{req} required by the model, not installed")
            continue
        if not req.specifier.contains(installed, prereleases=True):
            found.append(f"{req} required by the model, {installed} installed")
    try:
        meta = yaml.safe_load((directory / "MLmodel").read_text()) or {}
        logged = str(meta["flavors"]["python_function"]["python_version"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        return [*found, f"{directory / 'MLmodel'}: no Python version ({err!r})"]
    running = platform.python_version()
    if logged.split(".")[:2] != running.split(".")[:2]:
        found.append(f"model logged under Python {logged}, running {running}")
    return found


def log_policy_model(bundle: dict[str, Any]) -> mlflow.models.model.ModelInfo:
    """Log the policy under the active run as a models-from-code pyfunc (no pickle)."""
    signature = ModelSignature(inputs=None, params=ParamSchema([
        ParamSpec("as_of", "string", ""), ParamSpec("previous", "string", "")]))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy_bundle.json"
        path.write_text(json.dumps(bundle))
        return mlflow.pyfunc.log_model(
            name="policy",
            python_model=str(Path(serving.policy_model.__file__)),
            artifacts={"bundle": str(path)},
            signature=signature,
            pip_requirements=_requirements(),
        )


def register(model_uri: str, name: str, tags: dict[str, str]) -> str:
    """Register ``model_uri`` as a new version of ``name``; returns the version string.

    The sha256 of the stored ``policy_model.py``, bundle and ``MLmodel`` are added to ``tags``
    (:data:`INTEGRITY_FILES`), so serving can refuse a file changed after registration.
    """
    stored = local_path(MlflowClient().get_logged_model(
        model_uri.removeprefix("models:/")).artifact_location)
    hashes = {tag: file_sha256(stored / rel) for tag, rel in INTEGRITY_FILES.items()}
    mv = mlflow.register_model(model_uri, name, tags={**tags, **hashes})
    return str(mv.version)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def local_path(uri: str) -> Path:
    """Local path of a ``file://`` URI (or of a plain path)."""
    parsed = urlparse(uri)
    return Path(unquote(parsed.path)) if parsed.scheme == "file" else Path(uri)


def model_dir(mv: Any, artifact_root: Path) -> Path:
    """Directory of a version's stored model, found under the current ``artifact_root``.

    MLflow records absolute locations. When the project was moved (or copied), the part below
    the artifact root (``models/m-<id>/artifacts``) is re-resolved against the current root;
    the recorded location is the fallback.

    Raises
    ------
    ModelArtifactMissingError
        Neither location holds the model: names the version and both paths.
    """
    recorded = local_path(MlflowClient().get_model_version_download_uri(mv.name, mv.version))
    parts = recorded.parts
    rel = next((Path(*parts[i:]) for i in range(len(parts) - 1)
                if parts[i] == "models" and parts[i + 1].startswith("m-")), None)
    here = Path(artifact_root).resolve() / rel if rel is not None else None
    for candidate in (here, recorded):
        if candidate is not None and (candidate / "MLmodel").is_file():
            return candidate
    raise ModelArtifactMissingError(
        f"version {mv.version} of {mv.name!r}: its stored model is missing (recorded at "
        f"{recorded}" + (f", looked for under this project at {here}" if here else "")
        + "). Restore the artifact directory, or serve another version: `volmargin registry "
        "history` lists them, `volmargin registry rollback` moves @champion.")


def verify_integrity(mv: Any, directory: Path) -> list[str]:
    """Check the stored files against the hashes tagged at registration.

    Returns the tags a version registered before these checks lacks (nothing verified for
    them); raises :class:`ModelIntegrityError` on any mismatch, before the code is imported.
    """
    unverified = []
    shape = mlmodel_shape_problem(directory / "MLmodel")
    if shape:  # whatever the tags say (a version registered before MLmodel was hashed)
        raise ModelIntegrityError(
            f"version {mv.version} of {mv.name!r}: {directory / 'MLmodel'} {shape}: not the "
            "model volmargin logs; refusing to load it")
    for tag, rel in INTEGRITY_FILES.items():
        expected = mv.tags.get(tag)
        if expected is None:
            unverified.append(tag)
            continue
        found = file_sha256(directory / rel) if (directory / rel).is_file() else "missing"
        if found != expected:
            raise ModelIntegrityError(
                f"version {mv.version} of {mv.name!r}: {directory / rel} has sha256 {found}, "
                f"registered with {expected}: the stored model was changed after registration; "
                "refusing to load it")
    return unverified


def mlmodel_shape_problem(path: Path) -> str | None:
    """What makes ``MLmodel`` other than the one :func:`log_policy_model` writes — the
    models-from-code loader running ``policy_model.py`` from the model's own directory, the
    bundle at ``artifacts/policy_bundle.json``, nothing added to the import path — or None."""
    try:
        spec = yaml.safe_load(path.read_text())
        flavor = spec["flavors"]["python_function"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        return f"cannot be read as a pyfunc model ({type(exc).__name__}: {exc})"
    if flavor.get("loader_module") != CODE_LOADER:
        return f"has loader_module {flavor.get('loader_module')!r}, not {CODE_LOADER!r}"
    if Path(str(flavor.get("model_code_path", ""))).name != "policy_model.py":
        return f"has model_code_path {flavor.get('model_code_path')!r}, not policy_model.py"
    if flavor.get("code"):
        return f"adds {flavor.get('code')!r} to the import path (code)"
    bundle = (flavor.get("artifacts") or {}).get("bundle") or {}
    if bundle.get("path") != "artifacts/policy_bundle.json" or set(
            flavor.get("artifacts") or {}) != {"bundle"}:
        return f"has artifacts {flavor.get('artifacts')!r}, not the policy bundle alone"
    return None


def tag_orphan_versions(name: str, running: set[str]) -> list[str]:
    """Tag versions that were registered but never got an alias (the registering process died
    before ``@challenger`` was set); ``running`` are run ids still alive. Returns the versions.
    """
    client = MlflowClient()
    tagged = []
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except mlflow.exceptions.MlflowException:
        return []
    for mv in versions:
        aliased = any(key.startswith("alias.") for key in mv.tags)
        if aliased or ORPHAN_TAG in mv.tags or mv.run_id in running:
            continue
        client.set_model_version_tag(
            name, mv.version, ORPHAN_TAG,
            f"registered by run {mv.run_id} but never aliased: the process ended before "
            "@challenger was set; never served unless named with --model-version")
        tagged.append(str(mv.version))
    return tagged


HISTORY_PREFIX = "alias_history."


ALIAS_LOCK_TIMEOUT_S = 120.0


@contextlib.contextmanager
def alias_lock() -> Iterator[None]:
    """Serialize alias moves and their history between processes: a blocking file lock beside
    the SQLite store (``.aliases.lock``). ``run``, ``retrain``, ``registry rollback`` and the
    serve's reconciliation may all move or read ``@champion``; without it a move and its
    history entry could interleave with another process's (a reconciliation reading the
    alias moved but its history not yet written recorded a false "moved outside volmargin").
    Held for a few registry calls only. A remote tracking server has no file to lock: moves
    through it are not serialized here."""
    uri = mlflow.get_tracking_uri()
    if not uri.startswith("sqlite:///"):
        yield
        return
    with waiting(Path(uri.removeprefix("sqlite:///")).parent / ".aliases.lock", "alias move",
                 ALIAS_LOCK_TIMEOUT_S):
        yield


def set_alias(name: str, alias: str, version: str, reason: str,
              at: dt.datetime | None = None) -> None:
    """Point ``alias`` at ``version`` and append the move to the alias history (under
    :func:`alias_lock`)."""
    with alias_lock():
        _set_alias(name, alias, version, reason, at)


def _set_alias(name: str, alias: str, version: str, reason: str,
               at: dt.datetime | None = None) -> None:
    client = MlflowClient()
    # "Z", not "+00:00": MLflow tag keys may not contain "+"
    stamp = (at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    client.set_registered_model_alias(name, alias, version)
    client.set_registered_model_tag(name, f"{HISTORY_PREFIX}{alias}.{stamp}",
                                    json.dumps({"version": str(version), "reason": reason}))
    client.set_model_version_tag(name, version, f"alias.{alias}.set_at", stamp)


def reconcile_alias(name: str, alias: str = "champion") -> str | None:
    """Record a move of ``alias`` made outside :func:`set_alias` (the MLflow UI or API move
    aliases without writing the history): when the live alias points at another version than
    the history's last entry, append a move dated now and return a note saying so; None when
    they agree (or the alias is not set). Dated when it was *seen*, so "which version was in
    production on date D" is exact from then on and says when it could not be. Read and
    recorded under :func:`alias_lock`, so a move volmargin is making is never mistaken for
    one made outside it."""
    with alias_lock():
        try:
            live = str(MlflowClient().get_model_version_by_alias(name, alias).version)
        except mlflow.exceptions.MlflowException:
            return None
        moves = alias_history(name, alias)
        if moves and moves[-1]["version"] == live:
            return None
        last = moves[-1]["version"] if moves else "none"
        reason = (f"moved outside volmargin (MLflow UI or API) from {last} to {live}; "
                  "recorded when detected, the move itself may be earlier")
        _set_alias(name, alias, live, reason)
        return f"@{alias} {reason}"


def alias_history(name: str, alias: str = "champion") -> list[dict[str, str]]:
    """Every move of ``alias``, oldest first: ``{"at", "version", "reason"}``."""
    tags = MlflowClient().get_registered_model(name).tags
    prefix = f"{HISTORY_PREFIX}{alias}."
    moves = [{"at": key[len(prefix):], **json.loads(value)}
             for key, value in tags.items() if key.startswith(prefix)]
    return sorted(moves, key=lambda m: m["at"])


def parse_when(text: str) -> dt.datetime:
    """An ISO 8601 date or datetime; a bare date means the end of that UTC day."""
    stamp = dt.datetime.fromisoformat(text)
    if len(text) == 10:
        stamp = stamp + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
    return stamp


def version_at(name: str, when: dt.datetime, alias: str = "champion") -> str | None:
    """The version ``alias`` pointed to at ``when`` (UTC), or None before the first move."""
    when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    current = None
    for move in alias_history(name, alias):
        if dt.datetime.fromisoformat(move["at"]) <= when:
            current = move["version"]
    return current


def rollback(name: str, version: str, reason: str) -> None:
    """Point ``@champion`` back at an existing ``version`` (recorded like any move)."""
    MlflowClient().get_model_version(name, version)  # raises if it does not exist
    set_alias(name, CHAMPION, version, f"rollback: {reason}")


def champion_version(name: str) -> str | None:
    client = MlflowClient()
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except mlflow.exceptions.MlflowException:
        return None


def version_tag(name: str, version: str, key: str) -> str | None:
    return MlflowClient().get_model_version(name, version).tags.get(key)


CHAMPION_MOVED = "refused: @champion moved from"


@dataclass(frozen=True)
class Promotion:
    """What :func:`promote` did: ``promoted`` (``@champion`` moved to the version), and the
    gate's verdict and reason as tagged on the version — the caller's, unless the
    compare-and-set refused (``champion_moved``)."""

    promoted: bool
    passed: bool
    reason: str
    champion_moved: bool = False

    def __bool__(self) -> bool:
        return self.promoted


def promote(name: str, version: str, gate_passed: bool, reason: str, *,
            judged_against: str | None, first: bool = False) -> Promotion:
    """Move ``@champion`` to ``version`` if the gate passed; the decision is tagged either way.

    ``first``: the store has no champion and ``registry.gate.promote_first`` is set, so a
    refused version is promoted all the same (a fresh install can serve). Its ``gate.passed``
    tag stays ``false`` (what the gate decided) and ``gate.promoted_anyway`` says why it is
    champion: the serve reads that tag to freeze the assets its gate found not acceptable
    (:func:`serving.serve.gate_refused`).

    ``judged_against``: the champion version the gate compared with (None: there was none).
    The move is a compare-and-set under :func:`alias_lock`: if ``@champion`` moved meanwhile
    (another run promoted, a rollback), this version was judged against a champion that is
    no longer in place, so it is not promoted and ``gate.reason`` says so."""
    client = MlflowClient()
    moved = False
    with alias_lock():
        now = champion_version(name)
        if now != judged_against and (gate_passed or first):
            gate_passed, first, moved = False, False, True
            reason = (f"{CHAMPION_MOVED} {judged_against or 'none'} to {now} while this "
                      f"version was judged; rerun to compare with it ({reason})")
        client.set_model_version_tag(name, version, "gate.passed", str(gate_passed).lower())
        client.set_model_version_tag(name, version, "gate.reason", reason)
        if not gate_passed and first:
            client.set_model_version_tag(name, version, "gate.promoted_anyway",
                                         "first version")
        if gate_passed or first:
            _set_alias(name, CHAMPION, version, reason)
            return Promotion(True, gate_passed, reason)
        return Promotion(False, gate_passed, reason, moved)


def champion_uri(name: str) -> tuple[str, Any]:
    """``models:/name@champion`` and its model version, or a clear error when there is none."""
    client = MlflowClient()
    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        raise ChampionMissingError(
            f"registered model {name!r} has no @{CHAMPION} alias in {mlflow.get_tracking_uri()}; "
            "run `volmargin run` (or `volmargin retrain`) first"
        ) from None
    return f"models:/{name}@{CHAMPION}", mv
