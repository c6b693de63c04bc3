"""The package's folders follow the data path, and no import runs against it.

Each module of ``aftlab/`` sits on a floor (data 1 → model 2 → train 3 → sampling 4 → align 5 → config 6 →
eval 7 → report 8 → the entry points 9); a module may import from its own floor and the ones below, never from
one above — at module level or inside a function. Imports under ``if TYPE_CHECKING:`` name types only and are
exempt.
"""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "aftlab"
FLOORS = {"errors": 0, "records": 0, "data": 1, "model": 2, "train": 3, "sampling": 4, "align": 5, "config": 6,
          "eval": 7, "report": 8, "app": 9, "pipeline": 9, "stages": 9, "kfold": 9, "sweep": 9, "notebook": 9, "cli": 9,
          "__init__": 9, "__main__": 9}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PKG.parent).with_suffix("").parts)


def floor(module: str) -> int:
    """The floor of a dotted module inside aftlab: its top-level package or module decides."""
    parts = module.split(".")
    assert parts[0] == "aftlab", module
    return FLOORS[parts[1]] if len(parts) > 1 else FLOORS["__init__"]


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every aftlab import in ``path``, outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for child in node.body for n in ast.walk(child)}
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                root = ".".join(base + ([node.module] if node.module else []))
            else:
                root = node.module or ""
            if not root.startswith("aftlab"):
                continue
            names = [root] if node.module and node.level == 0 else [f"{root}.{a.name}" for a in node.names]
            out += [(node.lineno, n if n.split(".")[1:2] and n.split(".")[1] in FLOORS else root) for n in names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("aftlab")]
    return out


MODULES = sorted(PKG.rglob("*.py"))


def test_every_module_has_a_floor():
    assert {module_name(p).split(".")[1] for p in MODULES if p.parent != PKG or p.stem != "__init__"} <= set(FLOORS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_import_runs_against_the_data_path(path):
    mine = floor(module_name(path))
    upward = [f"line {line}: {mod} (floor {floor(mod)})" for line, mod in imported(path)
              if mod.count(".") and floor(mod) > mine]
    assert not upward, f"{module_name(path)} (floor {mine}) imports from above: {upward}"


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    fake = PKG / "data" / "questions.py"
    src = "from ..eval.metrics import task_accuracy\nif TYPE_CHECKING:\n    from ..config import RunConfig\n"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: src if self == fake else Path.read_bytes(self).decode())
    assert [m for _, m in imported(fake)] == ["aftlab.eval.metrics.task_accuracy"]
    assert floor("aftlab.eval.metrics") > floor(module_name(fake))


def test_stage_packages_are_folders_and_public_names_stay():
    for pkg in ("data", "model", "train", "sampling", "align", "eval", "report", "app"):
        assert (PKG / pkg / "__init__.py").is_file()
    import aftlab
    from aftlab import losses
    from aftlab.pipeline import run
    assert losses.aft_loss.__module__ == "aftlab.train.losses" and callable(run) and aftlab.losses is losses


@pytest.mark.slow
def test_a_non_editable_install_runs_the_app_entry_points_from_outside_the_checkout(tmp_path):
    """``pip install .`` (not editable), then ``aftlab app --help`` and ``python -m aftlab.app --help`` from
    another folder: the app is part of the installed package (it was once loaded from apps/ by file path)."""
    import os
    import shutil
    import subprocess
    import sys
    root = PKG.parent
    src = tmp_path / "src"
    shutil.copytree(root / "aftlab", src / "aftlab", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    target = tmp_path / "installed"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(target), str(src)], check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(target)}  # the installed copy, ahead of this checkout's editable one
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for cmd in ([sys.executable, str(target / "bin" / "aftlab"), "app", "--help"],
                [sys.executable, "-m", "aftlab.app", "--help"]):
        out = subprocess.run(cmd, cwd=outside, env=env, capture_output=True, text=True)
        assert out.returncode == 0 and "--runs" in out.stdout, (cmd, out.stderr[-500:])
    where = subprocess.run([sys.executable, "-c", "import aftlab.app.ui as u; print(u.__file__)"], cwd=outside,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(target)), where
