"""MLflow tracking for every stage run: params, per-epoch metrics, final metrics, artifacts.

The tracking store is ``MLFLOW_TRACKING_URI`` when that is set (a tracking server such as
``http://mlflow.example.org:5000``, or any store MLflow accepts), and otherwise an embedded
SQLite store ``mlflow.db`` in the working directory (the repository root under Snakemake and
DVC), with artifacts under ``mlartifacts/``. Any SQLite store keeps its artifacts in
``mlartifacts/`` beside the database file. Browse it with
``mlflow ui --backend-store-uri sqlite:///mlflow.db``.

Every run is tagged with ``sibnet.stage``, ``sibnet.dataset``, ``sibnet.method``,
``sibnet.seed``, ``sibnet.git_commit`` and ``sibnet.git_dirty``. ``tracking.enabled: false``
in params turns tracking off (a :class:`Tracker` then does nothing). Each stage run logs one
INFO line ``MLflow run <id> in <store>``.

A tracking server that is down. For an ``http(s)://`` store, :func:`start_run` first asks the
server's ``/health`` endpoint (one GET, no retries, :data:`HEALTH_TIMEOUT_S` seconds) and, if
it cannot connect or the server answers with a 5xx status, raises :class:`TrackingError` naming
the server and the ways out (start the server, unset ``MLFLOW_TRACKING_URI`` to use the local
store, or ``tracking.enabled: false``) instead of MLflow's minutes of retries and a long
traceback. There is deliberately no silent fallback to a local store: a run must never be
recorded anywhere but where the user said (in regulated settings the record has to be in the
agreed place), so the stage fails instead. Every stage enters :func:`start_run` before it
writes any output, so such a failure happens before any work is done and leaves no output.
Other answers (401, 403, 404, TLS errors) are left to MLflow, which reports them itself.

A server that dies in the middle of a run is not handled specially: MLflow retries by its own
policy (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_TIMEOUT``) and then raises an
``MlflowException``, which propagates out of the stage (the stage fails and the workflow engine
marks the job failed). The run then stays ``RUNNING`` on the server, as MLflow could not mark it
``FAILED``; outputs already written by the stage stay where they are.

Credentials. MLflow takes them from ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``/
``MLFLOW_TRACKING_TOKEN`` or from the URI itself (``https://user:password@host``, or a token
in its query). sibnet never writes or logs them: the URI is passed through :func:`redact`
wherever sibnet logs or reports it, MLflow's own "View run at <URI>" line on stdout is turned
off during a run (``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT``, as it would print the URI
verbatim; the INFO line above replaces it), and the messages of exceptions that leave a run
(e.g. MLflow's "API request to <URI> failed") have the credentials masked before they
propagate.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from http.client import HTTPException
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sibnet import invocation
from sibnet.errors import SibnetError

if TYPE_CHECKING:
    from sibnet.config import Params

__all__ = [
    "DEFAULT_TRACKING_URI",
    "HEALTH_TIMEOUT_S",
    "Tracker",
    "TrackingError",
    "check_server",
    "flatten",
    "git_state",
    "leaks_credentials",
    "log_output_hashes",
    "logged_output_hashes",
    "redact",
    "start_run",
    "tracking_uri",
]

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_ARTIFACT_ROOT = "mlartifacts"
HEALTH_TIMEOUT_S = 5.0
OUTPUT_HASHES = "sibnet/outputs.json"
"""The artifact of a stage's MLflow run that holds its outputs' hashes (after the job ends)."""
"""Seconds :func:`check_server` waits for a tracking server's ``/health`` answer."""

FIXES = (
    "start the server, unset MLFLOW_TRACKING_URI to use the local store ./mlflow.db, "
    "or set tracking.enabled: false in params to run without tracking"
)
"""The ways out of an unreachable tracking server, named in every :class:`TrackingError`."""

SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
"""Environment variables whose values are credentials MLflow sends to the server."""

_SECRET_PARAM = re.compile(r"token|passw(?:or)?d|pwd|secret|key|signature|credential|auth", re.I)
_SECRET_PARAM_EXACT = frozenset({"sig", "pass", "pw"})
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#]*)@")

log = logging.getLogger(__name__)


class TrackingError(RuntimeError, SibnetError):
    """The tracking store cannot be used (e.g. the tracking server is down)."""


def _secret_param(name: str) -> bool:
    """Whether a query parameter name looks like it carries a credential."""
    name = urllib.parse.unquote_plus(name).strip()
    return name.lower() in _SECRET_PARAM_EXACT or _SECRET_PARAM.search(name) is not None


def redact(uri: str) -> str:
    """``uri`` without credentials: no ``user:password@`` and no query parameters whose names
    look like secrets (token, password, key, secret, signature, ...; any case).

    ``http://alice:pw@host:5000/?token=x&a=1`` → ``http://host:5000/?a=1``. Anything else is
    returned unchanged (``sqlite:///mlflow.db``, ``file:///...``, ``databricks://profile``).
    """
    redacted = _USERINFO.sub(r"\g<scheme>", uri, count=1)
    rest, hash_, fragment = redacted.partition("#")
    base, question, query = rest.partition("?")
    if question:
        kept = [pair for pair in query.split("&") if not _secret_param(pair.partition("=")[0])]
        rest = f"{base}?{'&'.join(kept)}" if kept else base
    return f"{rest}{hash_}{fragment}"


def _secrets(uri: str) -> list[str]:
    """The credential strings that may show up in text about ``uri``: its userinfo, secret query
    values and the MLflow credential environment variables; longest first."""
    found: set[str] = set()
    match = _USERINFO.match(uri)
    if match:
        userinfo = match["userinfo"]
        found.add(f"{userinfo}@")
        user, colon, password = userinfo.partition(":")
        if password:
            found.update({password, urllib.parse.unquote(password)})
        elif not colon and len(user) >= 16:  # a token as the user name: https://<token>@host
            found.update({user, urllib.parse.unquote(user)})
    query = uri.partition("#")[0].partition("?")[2]
    for pair in query.split("&") if query else ():
        name, _, value = pair.partition("=")
        if value and _secret_param(name):
            found.update({value, urllib.parse.unquote_plus(value)})
    found.update(os.environ.get(name, "") for name in SECRET_ENV)
    found.discard("")
    return sorted(found, key=len, reverse=True)


def _mask(text: str, uri: str, secrets: list[str]) -> str:
    """``text`` with ``uri`` redacted and every secret replaced by ``***``."""
    if uri:
        text = text.replace(uri, redact(uri))
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _scrub(error: BaseException, uri: str) -> None:
    """Mask credentials in the messages of ``error`` and the exceptions it chains to, in place
    (the exception keeps its type and traceback)."""
    secrets = _secrets(uri)
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        with contextlib.suppress(Exception):  # read-only attributes: leave that one alone
            if any(isinstance(arg, str) and _leaks(arg, uri, secrets) for arg in current.args):
                current.args = tuple(
                    _mask(arg, uri, secrets) if isinstance(arg, str) else arg
                    for arg in current.args
                )
            message = getattr(current, "message", None)  # MlflowException keeps its own copy
            if isinstance(message, str) and _leaks(message, uri, secrets):
                current.message = _mask(message, uri, secrets)  # type: ignore[attr-defined]
        current = current.__cause__ or current.__context__


def leaks_credentials(text: str) -> bool:
    """Whether ``text`` holds a credential of the tracking store in use: the userinfo or a
    secret query value of ``MLFLOW_TRACKING_URI``, the unredacted URI itself, or the value of
    an MLflow credential environment variable (:data:`SECRET_ENV`)."""
    uri = tracking_uri()
    return _leaks(text, uri, _secrets(uri))


def _leaks(text: str, uri: str, secrets: list[str]) -> bool:
    """Whether ``text`` contains a credential (or ``uri`` in a form that has one)."""
    return (uri != redact(uri) and uri in text) or any(secret in text for secret in secrets)


def check_server(uri: str, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """Check that the tracking server at ``http(s)://`` URI ``uri`` is up (no-op for others).

    One ``GET <uri>/health`` without credentials and without retries. Only a failure to connect
    (refused, unknown host, no answer within ``timeout`` seconds) or a 5xx answer (typically a
    proxy whose MLflow server is down) counts as down; TLS problems and other answers are left
    to MLflow, which reports them in its own words.

    Raises:
        TrackingError: the server is down; the message names it (without credentials), the
            reason and the fixes.
    """
    if not uri.lower().startswith(("http://", "https://")):
        return
    public = redact(uri)
    base = public.partition("#")[0].partition("?")[0].rstrip("/")
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=timeout):
            return
    except urllib.error.HTTPError as error:
        if error.code < 500:
            return
        problem = f"is not available: it answered HTTP {error.code} {error.reason}"
    except urllib.error.URLError as error:
        if isinstance(error.reason, ssl.SSLError):
            return
        problem = f"is not reachable: {_describe(error.reason, timeout)}"
    except (OSError, HTTPException, ValueError) as error:
        if isinstance(error, ssl.SSLError):
            return
        problem = f"is not reachable: {_describe(error, timeout)}"
    message = f"MLflow tracking server {public} (MLFLOW_TRACKING_URI) {problem}. To fix: {FIXES}."
    raise TrackingError(_mask(message, uri, _secrets(uri)))


def _describe(reason: object, timeout: float) -> str:
    """A short reason for a failed connection."""
    if isinstance(reason, TimeoutError) or str(reason) == "timed out":
        return f"no answer within {timeout:g} s"
    text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
    return text or type(reason).__name__


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    """Set environment variable ``name`` to ``value`` inside the block."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded SQLite store in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def git_state(cwd: str | Path = ".") -> dict[str, str]:
    """The code version: ``{"commit": <sha or "unknown">, "dirty": "true"|"false"|"unknown"}``."""

    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return result.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": "unknown", "dirty": "unknown"}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": "unknown" if status is None else str(bool(status)).lower()}


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists are kept as their string form."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class Tracker:
    """A thin handle on the active MLflow run; every method is a no-op when tracking is off."""

    def __init__(self, mlflow_module: Any | None) -> None:
        self._mlflow = mlflow_module

    @property
    def enabled(self) -> bool:
        """Whether a run is being recorded (draw figures for it only then)."""
        return self._mlflow is not None

    @property
    def run_id(self) -> str | None:
        """The MLflow run id, or ``None`` when tracking is off."""
        if self._mlflow is None:
            return None
        return self._mlflow.active_run().info.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log (nested) params, flattened to dotted keys."""
        if self._mlflow is not None:
            self._mlflow.log_params({k: str(v) for k, v in flatten(params).items()})

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log the finite numeric entries of a (nested) metrics mapping."""
        if self._mlflow is None:
            return
        numeric = {
            key: float(value)
            for key, value in flatten(metrics).items()
            if isinstance(value, int | float)
            and not isinstance(value, bool)
            and value == value
            and abs(value) != float("inf")
        }
        if numeric:
            self._mlflow.log_metrics(numeric, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file into the run's artifacts."""
        if self._mlflow is not None:
            self._mlflow.log_artifact(str(path), artifact_path=artifact_path)


@contextlib.contextmanager
def start_run(
    params: Params, *, stage: str, method: str | None = None, seed: int | None = None
) -> Iterator[Tracker]:
    """Open an MLflow run for one stage execution and close it (FAILED on an exception).

    Args:
        params: validated params; ``tracking.enabled: false`` yields a no-op tracker,
            ``tracking.experiment`` names the MLflow experiment (created on first use) and
            ``prepare.dataset`` the dataset tag.
        stage, method, seed: recorded as tags and in the run name.

    Raises:
        TrackingError: the tracking server is down (checked before the run, so before the
            stage does any work). Exceptions raised inside the run, MLflow's included,
            propagate unchanged apart from credentials masked in their messages.
    """
    if not params.tracking.enabled:
        yield Tracker(None)
        return
    uri = tracking_uri()
    check_server(uri)
    try:
        with _run(params, uri, stage=stage, method=method, seed=seed) as tracker:
            yield tracker
    except BaseException as error:
        _scrub(error, uri)
        raise


@contextlib.contextmanager
def _run(
    params: Params, uri: str, *, stage: str, method: str | None, seed: int | None
) -> Iterator[Tracker]:
    """The MLflow run of :func:`start_run` in store ``uri`` (already checked)."""
    experiment = params.tracking.experiment
    dataset = params.prepare.dataset
    import mlflow

    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        location = None
        if uri.startswith("sqlite:///"):  # artifacts beside the database, not in ./mlruns
            database = Path(uri.removeprefix("sqlite:///"))
            location = (database.parent / DEFAULT_ARTIFACT_ROOT).resolve().as_uri()
        with contextlib.suppress(mlflow.exceptions.MlflowException):  # lost a creation race
            mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment)
    git = git_state()
    tags = {
        "sibnet.stage": stage,
        "sibnet.dataset": dataset,
        "sibnet.git_commit": git["commit"],
        "sibnet.git_dirty": git["dirty"],
        **invocation.current().tags(),
    }
    if method is not None:
        tags["sibnet.method"] = method
    if seed is not None:
        tags["sibnet.seed"] = str(seed)
    name = "-".join(str(part) for part in (stage, dataset, method, seed) if part is not None)
    # MLflow would print "View run ... at: <URI>" on stdout, credentials included.
    with (
        _env("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true"),
        mlflow.start_run(run_name=name, tags=tags) as run,
    ):
        log.info("MLflow run %s in %s", run.info.run_id, redact(uri))
        yield Tracker(mlflow)


def log_output_hashes(run_id: str, job: str, files: Mapping[str, str]) -> None:
    """Write the SHA-256 of every output file of ``job`` (``files``: path → hash, as in its
    lineage record) to its MLflow run ``run_id`` as the artifact :data:`OUTPUT_HASHES`: a copy
    of the hashes in the tracking store, a trust domain apart from the files (on a server),
    which ``sibnet audit --verify`` compares with the audit and the job's record."""
    import mlflow

    uri = tracking_uri()
    try:
        mlflow.MlflowClient(uri).log_dict(
            run_id, {"job": job, "files": dict(sorted(files.items()))}, OUTPUT_HASHES
        )
    except BaseException as error:
        _scrub(error, uri)
        raise


def logged_output_hashes(run_id: str) -> dict[str, str]:
    """The output hashes :func:`log_output_hashes` wrote to run ``run_id`` (path → SHA-256).

    Raises:
        TrackingError: the store holds no such run or artifact, or cannot be read; the message
            names the run and the store (credentials masked).
    """
    import mlflow

    uri = tracking_uri()
    try:
        mlflow.set_tracking_uri(uri)
        with _env("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"):  # one bar per job otherwise
            found = mlflow.artifacts.load_dict(f"runs:/{run_id}/{OUTPUT_HASHES}")
    except Exception as error:  # MLflow raises several types for a missing run or file
        raise TrackingError(
            f"MLflow run {run_id} in {redact(uri)}: no output hashes readable "
            f"({OUTPUT_HASHES}): {_mask(str(error), uri, _secrets(uri))}"
        ) from None
    return dict(found.get("files", {}))
