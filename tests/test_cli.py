from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from sibnet.cli import build_parser, main
from sibnet.dag import STAGES
from tests.workflow.repo import script_env


def test_every_stage_is_a_subcommand_with_its_paths() -> None:
    parser = build_parser()
    for spec in STAGES.values():
        args = ["--params", "p.yaml"]
        for option in (*spec.inputs, *spec.outputs):
            args += [f"--{option}", f"{option}.x"]
        if spec.per_method:
            args += ["--method", "baseline", "--seed", "3"]
        parsed = parser.parse_args([spec.name, *args])
        assert parsed.stage is spec
        for option in (*spec.inputs, *spec.outputs):
            assert getattr(parsed, option) == Path(f"{option}.x")


def test_console_script_is_installed() -> None:
    result = subprocess.run(
        ["sibnet", "--help"], capture_output=True, text=True, check=True, env=script_env(os.environ)
    )
    for name in STAGES:
        assert name in result.stdout


def test_invalid_params_stop_the_stage_with_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  epochs: -1\n")
    out = tmp_path / "prepared"
    status = main(["prepare", "--params", str(params), "--prepared", str(out)])
    assert status == 2
    error = capsys.readouterr().err
    assert "sibnet prepare: error:" in error and "train.epochs" in error
    assert not out.exists()


def _stage_argv(stage: str, params: Path, folder: Path, method: str = "baseline") -> list[str]:
    """A full command line for ``stage``: every path option points into ``folder``."""
    spec = STAGES[stage]
    argv = [stage, "--params", str(params)]
    for option in (*spec.inputs, *spec.outputs):
        argv += [f"--{option}", str(folder / option)]
    if spec.per_method:
        argv += ["--method", method, "--seed", "0"]
    return argv


def test_unknown_method_stops_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("{}\n")
    assert main(_stage_argv("train", params, tmp_path, method="vit")) == 2
    assert "unknown method 'vit'" in capsys.readouterr().err
    assert not (tmp_path / "checkpoint").exists()


def test_missing_prepared_dataset_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("tracking: {enabled: false}\n")
    assert main(_stage_argv("evaluate", params, tmp_path)) == 2
    assert "prepared/dataset.json: not found" in capsys.readouterr().err


def test_bad_raw_data_exits_2_and_skip_invalid_writes_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    from tests.data.image_files import radiograph, truncate, write_png

    raw = tmp_path / "raw"
    lines = ["path,a"]
    for i in range(12):
        write_png(raw / f"{i}.png", radiograph(20, 20, seed=i))
        lines.append(f"{i}.png,{i % 2}")
    lines.append("12.png,maybe")
    truncate(raw / "3.png")
    (raw / "labels.csv").write_text("\n".join(lines) + "\n")
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "prepare": {
                    "source": "folder",
                    "dataset": "mine",
                    "size": 16,
                    "workers": 1,
                    "folder": {"root": str(raw), "classes": ["a"]},
                },
                "segment": {"structures": []},
                "tracking": {"enabled": False},
            }
        )
    )
    out = tmp_path / "prepared"
    argv = ["prepare", "--params", str(params), "--prepared", str(out)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "2 problem(s)" in error
    assert "labels.csv, row 4: image 3.png" in error
    assert "labels.csv, row 13: column 'a': unknown label value 'maybe'" in error
    assert not out.exists()
    assert main([*argv, "--skip-invalid"]) == 0
    assert (out / "rejects.csv").read_text().count("\n") == 3


def test_an_unreachable_tracking_server_exits_2_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:pw-77c1@127.0.0.1:1")
    params = tmp_path / "params.yaml"
    params.write_text("prepare: {phantom: {n_images: 20, size: 32}}\n")
    out = tmp_path / "prepared"
    assert main(["prepare", "--params", str(params), "--prepared", str(out)]) == 2
    error = capsys.readouterr().err
    assert "http://127.0.0.1:1" in error and "tracking.enabled: false" in error
    assert "pw-77c1" not in error
    assert not out.exists()


def test_a_stage_brings_its_own_help_and_switches() -> None:
    """Help text and extra switches live in the stage definition (sibnet.dag), so a new stage
    needs no edit of the command line: it is listed with its help, and a switch with a keyword
    reaches the stage function."""
    from sibnet import dag

    toy = dag.Stage(
        name="toy",
        help="a toy stage for this test",
        inputs={"prepared": dag.PREPARED},
        outputs={"table": "results/{dataset}/toy.csv"},
        params=("prepare",),
        options=(dag.Option("--fast", "go fast", keyword="fast"),),
        implementation="sibnet.stages.prepare",  # any module: the test only parses
    )
    with pytest.raises(ValueError, match=r"stage 'toy': no module sibnet\.stages\.toy"):
        dag.register_stage(dataclasses.replace(toy, implementation=None))
    dag.register_stage(toy)
    try:
        parser = build_parser()
        assert "a toy stage for this test" in parser.format_help()
        parsed = parser.parse_args(
            ["toy", "--params", "p", "--prepared", "d", "--table", "t", "--fast"]
        )
        assert parsed.stage is toy and parsed.fast is True
        assert (
            parser.parse_args(["toy", "--params", "p", "--prepared", "d", "--table", "t"]).fast
            is None
        )
    finally:
        dag.STAGES.unregister("toy")
