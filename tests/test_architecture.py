"""The package's shape: layers, no import cycles, small modules, a current code map, light imports."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _architecture():  # tools/ is not a package: load the checker by path
    spec = importlib.util.spec_from_file_location("architecture", ROOT / "tools" / "architecture.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_layers_cycles_and_sizes_hold() -> None:
    assert _architecture().breaches() == []


def test_code_map_is_generated_from_the_code() -> None:
    arch = _architecture()
    assert arch.DOC.read_text() == arch.render(), "run: python tools/architecture.py --write"


def test_checker_sees_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    arch = _architecture()
    mods = arch.modules()
    fake = dict(mods)
    low, high = "rnnrec_cli.data.sequences", "rnnrec_cli.cli.app"
    fake[low] = arch.Module(low, Path("x"), "data", 10, "doc", frozenset({high}))
    problems = arch.layer_breaches(fake)
    assert any(p.startswith(f"{low} (data) imports {high} (cli)") for p in problems)
    a, b = "rnnrec_cli.data.ingest", "rnnrec_cli.data.columns"
    fake = dict(mods)
    fake[a] = arch.Module(a, Path("x"), "data", 10, "doc", frozenset({b}))
    fake[b] = arch.Module(b, Path("x"), "data", 10, "doc", frozenset({a}))
    assert sorted([a, b]) in arch.cycles(fake)


def _loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return set(out.stdout.split())


@pytest.mark.slow
def test_import_and_help_stay_light() -> None:
    heavy = {"jax", "polars", "flax", "optax", "optuna", "matplotlib", "numpy"}
    assert not heavy & _loaded_after("import rnnrec_cli")
    loaded = _loaded_after(
        "from typer.testing import CliRunner\nfrom rnnrec_cli.cli.app import app\n"
        "r = CliRunner().invoke(app, ['train', '--help'])\nassert r.exit_code == 0, r.output"
    )
    assert not {"jax", "polars", "flax", "optax", "optuna", "matplotlib"} & loaded


def test_cli_reference_is_generated_from_help() -> None:
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "tools" / "cli_reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.DOC.read_text() == module.render(), "run: python tools/cli_reference.py --write"
