"""The Python API (`pipeline.run_job`, `plan_job`, `load_spec`): the README's examples as
written, and a spec that means the same from Python as from `nst run`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import pipeline
from pipeline.core.errors import NSTError

from ..conftest import make_content, make_style, run_nst

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(autouse=True)
def _shutdown_ray():
    """run_job starts a local Ray in this process, as it does for a user; the modules after this
    one start their own."""
    yield
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()


def readme_examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API") : text.index("### A stage of a Ray Data pipeline")]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_importing_the_package_or_the_cli_parser_loads_neither_torch_nor_ray():
    """`import pipeline` and `nst --help` stay fast: torch and Ray load when first used."""
    for code in ["import pipeline", "from pipeline.cli.main import build_parser; build_parser()"]:
        check = f"import sys; {code}; print('torch' in sys.modules, 'ray' in sys.modules)"
        out = subprocess.run(
            [sys.executable, "-c", check], capture_output=True, text=True, check=True
        )
        assert out.stdout.split() == ["False", "False"], code
    assert set(pipeline.__all__) >= {"run_job", "plan_job", "load_spec", "Stylizer", "NSTError"}
    assert {name: getattr(pipeline, name).__name__ for name in ["ResultRow", "RunOptions"]} == {
        "ResultRow": "ResultRow",
        "RunOptions": "RunOptions",
    }
    with pytest.raises(AttributeError, match="no_such_name"):  # a name it does not export
        pipeline.no_such_name  # noqa: B018


def test_the_readme_examples_run_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    examples = readme_examples()
    assert len(examples) == 2
    for code in examples:
        exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "2 pairs, first" in out and "2 done, 0 failed; results in runs/python-demo" in out
    rows = pd.read_parquet(tmp_path / "runs" / "python-demo" / "results")
    assert len(rows) == 2 and set(rows.status) == {"done"}  # force: replaced, not added


def test_specs_come_as_paths_yaml_text_or_mappings_and_errors_name_the_field(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("name: a\ncontent: {source: demo}\nstyles: {source: demo}\n")
    from_path = pipeline.load_spec(path)
    others = [str(path), path.read_text(), from_path.model_dump(exclude_unset=True), from_path]
    for other in others:
        assert pipeline.load_spec(other).model_dump() == from_path.model_dump()
    with pytest.raises(NSTError) as info:
        pipeline.load_spec({"name": "a", "content": {"source": "demo"}, "styles": {"sourc": 1}})
    assert info.value.field.startswith("styles")
    with pytest.raises(NSTError) as info:
        pipeline.run_job(from_path, actor=2)
    assert info.value.field == "actor" and "actors" in info.value.reason
    with pytest.raises(NSTError) as info:
        pipeline.load_spec("name: a\ncontent: [demo\n")
    assert info.value.reason.startswith("line 3, column 1: not valid YAML")
    # The options' old names still work, renamed after --commit-every (here up to the typo).
    with pytest.warns(DeprecationWarning, match="commit_every"), pytest.raises(NSTError) as info:
        pipeline.run_job(from_path, flush_rows=1, actor=2)
    assert info.value.field == "actor" and "commit_every" in info.value.reason


def test_a_spec_means_the_same_from_python_and_from_nst_run(tmp_path):
    """resources: one actor, a pixel limit that refuses the large photo: both ways."""
    from pipeline.io import images

    contents, styles = tmp_path / "c", tmp_path / "s"
    images.save_png(make_content(32, 40), contents / "small.png")
    images.save_png(make_content(400, 500), contents / "huge.png")
    images.save_png(make_style(32, 32), styles / "s.png")
    spec = (
        f"content: {{source: {contents}}}\nstyles: {{source: {styles}}}\n"
        "params: {schedule: [[32, 2]]}\n"
        "resources: {actors: 1, device: cpu, max_pixels: 100000}\n"
    )
    (tmp_path / "cli.yaml").write_text(f"name: cli\noutput: {tmp_path / 'o'}\n{spec}")
    proc = run_nst("run", str(tmp_path / "cli.yaml"))
    assert proc.returncode == 1, proc.stderr  # one pair failed: exit 1
    summary = pipeline.run_job(f"name: py\noutput: {tmp_path / 'o'}\n{spec}")
    assert (summary.done, summary.failed) == (1, 1)
    for job in ("cli", "py"):
        table = pd.read_parquet(tmp_path / "o" / job / "results").set_index("content_id")
        assert table.actor_id.nunique() == 1 and set(table.device) == {"cpu"}
        assert table.loc["huge.png"].error_type == "TooLarge"
        assert "limit of 0.1 MP" in table.loc["huge.png"].error


@pytest.mark.parametrize(
    ("command", "blocked", "extra"),
    [
        (["serve"], "uvicorn", "web"),
        (["report", "runs/none"], "jinja2", "report"),
        (["data", "fetch", "artworks", "--dest", "x"], "kaggle", "kaggle"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(tmp_path, command, blocked, extra):
    """As on a worker image installed without the extra: the module cannot be imported."""
    code = (
        f"import sys; sys.modules[{blocked!r}] = None; from pipeline.cli.main import main; "
        f"sys.exit(main({command!r}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"nst: error: {extra}: needs {blocked}: pip install 'nst-pipeline[{extra}]'"
    ]
