"""The examples of docs/your-model.md run as written (small data, CPU)."""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _blocks(name: str) -> list[str]:
    text = (ROOT / "docs" / name).read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_your_model_examples_run(tmp_path, monkeypatch):
    pytest.importorskip("timm", reason="the timm example needs clt_gen[timm]")
    pytest.importorskip("pandas", reason="the DataFrame example needs pandas")
    monkeypatch.chdir(tmp_path)
    blocks = _blocks("your-model.md")
    assert len(blocks) >= 5
    namespace: dict[str, object] = {"__name__": "docs_example"}
    for code in blocks:  # one namespace: later examples use earlier ones' data
        exec(compile(code, "docs/your-model.md", "exec"), namespace)  # noqa: S102
    assert (tmp_path / "runs" / "resnetlet" / "report.json").exists()
    graph = namespace["graph_report"]
    assert [row.name for row in graph.layers] == ["add", "flatten", "head"]
    assert namespace["report"].risks.check_error is not None


def test_api_page_is_generated_from_all():
    import runpy

    render = runpy.run_path(str(ROOT / "docs" / "gen_api.py"))["render"]
    assert (ROOT / "docs" / "api.md").read_text() == render(), (
        "docs/api.md is out of date with __all__: run python docs/gen_api.py"
    )
