"""MLflow tracking against a real ``mlflow server``; a server that is down; credential redaction.

The module-scoped :func:`mlflow_server` fixture starts ``mlflow server`` (SQLite backend,
artifacts proxied through the server) on a free port of 127.0.0.1 and stops it, and its whole
process group, afterwards. Nothing here waits for a fixed time: the server is polled on
``/health`` until it answers (or dies, or a 120 s deadline passes).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sibnet.config import Params, validate_params
from sibnet.tracking import TrackingError, check_server, git_state, redact

if TYPE_CHECKING:
    from mlflow.entities import Run

START_DEADLINE_S = 120.0
STOP_TIMEOUT_S = 30.0
USERNAME = "alice"
PASSWORD = "s3cr3t-pw-9f1"


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_params(experiment: str) -> Params:
    """The tiny phantom (40 images of 32 px), tracked in MLflow experiment ``experiment``."""
    return validate_params(
        {
            "prepare": {"dataset": "tiny", "phantom": {"n_images": 40, "size": 32}},
            "tracking": {"experiment": experiment},
        }
    )


def with_credentials(uri: str, username: str = USERNAME, password: str = PASSWORD) -> str:
    """``http://host:port`` → ``http://username:password@host:port``."""
    scheme, _, rest = uri.partition("://")
    return f"{scheme}://{username}:{password}@{rest}"


@dataclass(frozen=True)
class Server:
    """A running ``mlflow server``: its URI, and the folder of its store, artifacts and logs."""

    uri: str
    port: int
    folder: Path


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate ``process`` and its process group (uvicorn/gunicorn workers); kill on timeout."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError):  # workers that outlived the main process
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def mlflow_server_process(folder: Path) -> Iterator[Server]:
    """Run ``mlflow server`` with its SQLite store and proxied artifacts in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # no job-runner processes
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--workers",
        "1",
    ]
    stderr_path = folder / "server.err"
    with open(folder / "server.out", "wb") as stdout, open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            command, cwd=folder, env=env, stdout=stdout, stderr=stderr, start_new_session=True
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"mlflow server exited with {process.returncode}:\n"
                    f"{stderr_path.read_text(errors='replace')[-4000:]}"
                )
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{uri}/health", timeout=5) as response,
            ):
                if response.status == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow server did not answer on {uri}/health within {START_DEADLINE_S} s:\n"
                    f"{stderr_path.read_text(errors='replace')[-4000:]}"
                )
            time.sleep(0.5)
        yield Server(uri=uri, port=port, folder=folder)
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real ``mlflow server`` for this module's tests."""
    with mlflow_server_process(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a local port until :meth:`close` (the server "dies")."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port: int = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.closed = threading.Event()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                if self.closed.is_set():
                    client.close()
                    upstream.close()
                    return
                self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Stop listening and cut every open connection."""
        with self.lock:
            self.closed.set()
            self.listener.close()
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def find_run(uri: str, experiment: str, stage: str = "prepare") -> Run:
    """The single run of ``experiment`` tagged ``sibnet.stage == stage`` in store ``uri``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"experiment {experiment!r} not on the server"
    runs = client.search_runs(
        [found.experiment_id], filter_string=f"tags.`sibnet.stage` = '{stage}'"
    )
    assert len(runs) == 1, runs
    return runs[0]


def files_containing(folder: Path, needles: list[bytes]) -> list[str]:
    """The files under ``folder`` (every byte, databases included) containing a needle."""
    return [
        str(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and any(needle in path.read_bytes() for needle in needles)
    ]


@contextlib.contextmanager
def capture_all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Send every log record (any level), MLflow's non-propagating loggers' included, to
    ``caplog``."""
    caplog.set_level(logging.DEBUG)
    extra = [logging.getLogger(name) for name in ("mlflow", "sibnet", "urllib3", "alembic")]
    levels = [logger.level for logger in extra]
    for logger in extra:
        logger.addHandler(caplog.handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        for logger, level in zip(extra, levels, strict=True):
            logger.removeHandler(caplog.handler)
            logger.setLevel(level)


# --------------------------------------------------------------------------- redact


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("http://alice:s3cr3t@127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("http://user:secret@host:5000/", "http://host:5000/"),
        ("https://token@mlflow.example.org/prefix", "https://mlflow.example.org/prefix"),
        ("http://u:p@ss@host:5000", "http://host:5000"),
        (
            "https://mlflow.example.org/api?token=abc123&experiment=7",
            "https://mlflow.example.org/api?experiment=7",
        ),
        (
            "https://h.example.org/x?Password=a&API_KEY=b&X-Amz-Signature=c&sig=d&clientSecret=e",
            "https://h.example.org/x",
        ),
        ("https://h/?access_token=t#frag", "https://h/#frag"),
        (
            "postgresql://mlflow:pw@db:5432/mlflow?sslmode=require",
            "postgresql://db:5432/mlflow?sslmode=require",
        ),
        ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
        ("sqlite:////abs/path/mlflow.db", "sqlite:////abs/path/mlflow.db"),
        ("sqlite:////data/user@example/mlflow.db", "sqlite:////data/user@example/mlflow.db"),
        ("file:///tmp/mlruns", "file:///tmp/mlruns"),
        ("databricks://profile", "databricks://profile"),
        ("databricks", "databricks"),
        ("mlflow-artifacts://host:5000/x?a=1", "mlflow-artifacts://host:5000/x?a=1"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ],
)
def test_redact(uri: str, expected: str) -> None:
    assert redact(uri) == expected


def test_check_server_ignores_non_http_stores() -> None:
    for uri in ("sqlite:///mlflow.db", "file:///tmp/mlruns", "databricks://profile"):
        check_server(uri)  # no request, no error


# --------------------------------------------------------------------------- a server that is down


def test_server_down_fails_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sibnet.stages.prepare import prepare

    port = free_port()  # nothing listens there
    uri = with_credentials(f"http://127.0.0.1:{port}", "bob", "hunter2-pw-7c4")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    work = tmp_path / "cwd"  # where a local fallback store (./mlflow.db) would appear
    work.mkdir()
    monkeypatch.chdir(work)
    outputs = tmp_path / "prepared"
    outputs.mkdir()

    with pytest.raises(TrackingError) as raised:
        prepare(tiny_params("server-down"), prepared=outputs / "tiny")

    message = str(raised.value)
    assert f"http://127.0.0.1:{port}" in message
    assert "not reachable" in message
    assert "start the server" in message
    assert "unset MLFLOW_TRACKING_URI" in message
    assert "tracking.enabled: false" in message
    assert "hunter2-pw-7c4" not in message
    assert "bob" not in message
    assert list(outputs.iterdir()) == []  # no output, not even a temporary folder
    assert list(work.iterdir()) == []  # no silent fallback to a local store


def test_server_answering_5xx_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy in front of a dead MLflow server answers 502/503: that is down, too."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Unavailable(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(503, "Service Unavailable")

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        port = httpd.server_address[1]
        with pytest.raises(TrackingError, match=r"not available: it answered HTTP 503") as raised:
            check_server(f"http://127.0.0.1:{port}/?token=tok-5551")
        assert "tok-5551" not in str(raised.value)
        assert f"http://127.0.0.1:{port}/" in str(raised.value)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_server_not_answering_is_down() -> None:
    """A server that accepts connections but never answers: down after the timeout."""
    with socket.create_server(("127.0.0.1", 0)) as listener:  # listens, never accepts
        port = listener.getsockname()[1]
        with pytest.raises(TrackingError, match=r"not reachable: no answer within 0\.5 s"):
            check_server(f"http://127.0.0.1:{port}", timeout=0.5)


# --------------------------------------------------------------------------- a real server


def test_stage_run_recorded_on_server(
    mlflow_server: Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import mlflow

    from sibnet.stages.prepare import prepare

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    caplog.set_level(logging.INFO, logger="sibnet.tracking")
    prepared = tmp_path / "tiny"
    prepare(tiny_params("server-test"), prepared=prepared)

    run = find_run(mlflow_server.uri, "server-test")
    assert run.info.status == "FINISHED"
    assert run.data.params["prepare.dataset"] == "tiny"
    assert run.data.params["prepare.source"] == "phantom"
    assert run.data.params["skip_invalid"] == "False"
    assert run.data.metrics["num_images"] == 40
    assert run.data.metrics["rejected_rows"] == 0
    assert sum(value for key, value in run.data.metrics.items() if key.startswith("split.")) == 40
    tags = run.data.tags
    assert tags["sibnet.stage"] == "prepare"
    assert tags["sibnet.dataset"] == "tiny"
    assert tags["sibnet.git_commit"] == git_state()["commit"]
    assert tags["sibnet.git_dirty"] in {"true", "false", "unknown"}

    client = mlflow.tracking.MlflowClient(mlflow_server.uri)
    assert "dataset.json" in [item.path for item in client.list_artifacts(run.info.run_id)]
    downloaded = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id,
        artifact_path="dataset.json",
        dst_path=str(tmp_path / "download"),
        tracking_uri=mlflow_server.uri,
    )
    local = (prepared / "dataset.json").read_bytes()
    assert Path(downloaded).read_bytes() == local
    json.loads(local)  # a real JSON document, not an empty file
    # Proxied: the server stored the artifact in its own artifact folder.
    stored = list((mlflow_server.folder / "artifacts").rglob("dataset.json"))
    assert [path.read_bytes() for path in stored] == [local]

    assert f"MLflow run {run.info.run_id} in {mlflow_server.uri}" in caplog.text


def test_the_runs_of_one_invocation_are_found_together_on_the_server(
    mlflow_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every run is tagged with its pipeline invocation (sibnet.invocation): filtering the
    server on one invocation finds its runs and none of another's."""
    from mlflow.tracking import MlflowClient

    from sibnet.invocation import ENV_ENGINE, ENV_ID
    from sibnet.stages.prepare import prepare

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    monkeypatch.setenv(ENV_ENGINE, "snakemake")
    for number, invocation in enumerate(("pipeline-a", "pipeline-a", "pipeline-b")):
        monkeypatch.setenv(ENV_ID, invocation)
        prepare(tiny_params("invocations"), prepared=tmp_path / f"tiny{number}")

    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("invocations")
    assert experiment is not None
    for invocation, count in (("pipeline-a", 2), ("pipeline-b", 1)):
        runs = client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.`sibnet.invocation` = '{invocation}'"
        )
        assert len(runs) == count, invocation
        assert {r.data.tags["sibnet.engine"] for r in runs} == {"snakemake"}


def test_no_credentials_in_outputs_store_or_logs(
    mlflow_server: Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from sibnet.stages.prepare import prepare

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USERNAME)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", with_credentials(mlflow_server.uri))
    outputs = tmp_path / "outputs"
    with capture_all_logs(caplog):
        prepare(tiny_params("server-credentials"), prepared=outputs / "tiny")

    run = find_run(mlflow_server.uri, "server-credentials")
    assert run.info.status == "FINISHED"
    basic = base64.standard_b64encode(f"{USERNAME}:{PASSWORD}".encode())
    needles = [PASSWORD.encode(), basic]
    assert files_containing(outputs, needles) == []
    assert files_containing(mlflow_server.folder, needles) == []  # store, artifacts, server logs
    log_text = caplog.text + "\n".join(record.getMessage() for record in caplog.records)
    assert f"MLflow run {run.info.run_id} in {mlflow_server.uri}" in log_text
    assert PASSWORD not in log_text
    assert f"{USERNAME}:" not in log_text
    printed = capfd.readouterr()
    assert PASSWORD not in printed.out + printed.err


def test_server_dying_mid_run_fails_the_stage(
    mlflow_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server goes away after the run started: MLflow's exception propagates (credentials
    masked) and the run stays RUNNING on the server."""
    from mlflow.exceptions import MlflowException

    import sibnet.stages.prepare as prepare_module

    proxy = TcpProxy(mlflow_server.port)
    try:
        uri = with_credentials(f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once
        write: Callable[..., None] = prepare_module.ingest

        def write_then_die(*args: object, **kwargs: object) -> None:
            write(*args, **kwargs)
            proxy.close()

        monkeypatch.setattr(prepare_module, "ingest", write_then_die)
        with pytest.raises(MlflowException) as raised:
            prepare_module.prepare(tiny_params("server-dies"), prepared=tmp_path / "tiny")
    finally:
        proxy.close()

    text = "".join(traceback.format_exception(raised.value))
    assert f"127.0.0.1:{proxy.port}" in text
    assert PASSWORD not in text
    run = find_run(mlflow_server.uri, "server-dies")
    assert run.info.status == "RUNNING"  # MLflow could not mark it FAILED
    assert "prepare.dataset" in run.data.params  # logged before the server went away
    assert "num_images" not in run.data.metrics
