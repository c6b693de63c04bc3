"""Security: no code execution from data, no pickles, safetensors only, no remote code, loopback app.

The package scan walks the syntax tree of every module in ``aftlab/`` and ``apps/`` (so comments,
docstrings and messages that mention e.g. "pickle" do not count, and ``model.eval()`` is not
``eval``), and a self-test proves the scanner flags each pattern it looks for.
"""
import ast
import inspect
from pathlib import Path

from aftlab.config import PRESETS, ModelConfig
from aftlab.model.lm import load_lm

ROOT = Path(__file__).resolve().parents[1]
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _param_defaults(node) -> list:
    """(parameter, default expression) pairs of a function definition, keyword-only ones included."""
    a = node.args
    params = a.posonlyargs + a.args
    pairs = list(zip(params[len(params) - len(a.defaults):], a.defaults))
    return pairs + [(p, d) for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]


def findings(source: str, name: str = "<src>") -> list[str]:
    """Unsafe constructs in Python ``source``: one "name:line: what" string each."""
    out = []
    for node in ast.walk(ast.parse(source)):
        where = f"{name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Call):
            f = node.func
            kw = {k.arg: k.value for k in node.keywords}
            if isinstance(f, ast.Name) and f.id in ("eval", "exec", "compile", "__import__"):
                out.append(f"{where}: {f.id}()")
            if isinstance(f, ast.Attribute) and f.attr == "load" and isinstance(f.value, ast.Name):
                if f.value.id == "torch" and not _is_true(kw.get("weights_only")):
                    out.append(f"{where}: torch.load without weights_only=True")
                if f.value.id == "yaml":
                    out.append(f"{where}: yaml.load")
            if isinstance(f, ast.Attribute) and f.attr == "load" and _is_true(kw.get("allow_pickle")):
                out.append(f"{where}: load(allow_pickle=True)")
            if _is_true(kw.get("trust_remote_code")):
                out.append(f"{where}: trust_remote_code=True")
            if _is_true(kw.get("shell")):
                out.append(f"{where}: shell=True")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for m in mods:
                if m.split(".")[0] in UNSAFE_MODULES:
                    out.append(f"{where}: imports {m}")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for p, d in _param_defaults(node):
                if p.arg == "trust_remote_code" and _is_true(d):
                    out.append(f"{where}: {node.name}(trust_remote_code=True) default")
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if node.target.id == "trust_remote_code" and _is_true(node.value):
                out.append(f"{where}: trust_remote_code field defaults to True")
    return out


def _package_files() -> list[Path]:
    return sorted(p for d in ("aftlab", "apps") if (ROOT / d).is_dir() for p in (ROOT / d).rglob("*.py"))


def test_scanner_flags_every_pattern():
    bad = """
import pickle
from dill import loads
x = eval("1")
exec("y = 1")
torch.load("f.pt")
torch.load("f.pt", weights_only=False)
yaml.load(s)
np.load("a.npy", allow_pickle=True)
AutoModel.from_pretrained("m", trust_remote_code=True)
subprocess.run("ls", shell=True)
def load(path, trust_remote_code=True): ...
class C:
    trust_remote_code: bool = True
"""
    assert len(findings(bad)) == 12
    ok = "model.eval()\ntorch.load('f', map_location='cpu', weights_only=True)\nevaluate(x)\nmsg = 'no pickle'\n"
    assert findings(ok) == []


def test_package_has_no_unsafe_constructs():
    files = _package_files()
    assert len(files) >= 10  # the scan really covers the package
    problems = [f for p in files for f in findings(p.read_text(), str(p.relative_to(ROOT)))]
    assert problems == []


def test_remote_code_is_off_by_default():
    assert inspect.signature(load_lm).parameters["trust_remote_code"].default is False
    assert ModelConfig().trust_remote_code is False
    assert all(make().model.trust_remote_code is False for make in PRESETS.values())


def test_safetensors_win_over_a_pickle_beside_them(tiny, tmp_path):
    """A model folder holding both formats loads the safetensors and never touches the pickle."""
    import torch
    from test_bad_input import _trap_file
    folder = tmp_path / "model"
    tiny.save(folder)
    marker = tmp_path / "unpickled"
    _trap_file(folder / "pytorch_model.bin", marker)
    lm = load_lm(folder)
    assert not marker.exists()
    for (n, a), b in zip(tiny.model.state_dict().items(), lm.model.state_dict().values()):
        assert torch.equal(a, b), n


def _loopback_problems(source: str) -> tuple[list[str], int]:
    """Non-loopback host defaults in an app's source, and how many host settings were seen."""
    problems, seen = [], 0

    def check(value, where):
        nonlocal seen
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            seen += 1
            if value.value not in LOOPBACK:
                problems.append(f"line {where}: binds {value.value!r} by default")

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for p, d in _param_defaults(node):
                if p.arg in ("host", "server_name", "bind"):
                    check(d, node.lineno)
        if isinstance(node, ast.Call):
            kw = {k.arg: k.value for k in node.keywords}
            if "server_name" in kw:
                check(kw["server_name"], node.lineno)
            first = node.args[0] if node.args else None
            if (isinstance(first, ast.Constant) and first.value in ("--host", "--server-name") and "default" in kw):
                check(kw["default"], node.lineno)
    return problems, seen


def test_loopback_checker_catches_a_public_default():
    assert _loopback_problems("def launch(host='0.0.0.0'): ...")[0]
    assert _loopback_problems("app.launch(server_name='127.0.0.1')") == ([], 1)


def test_app_binds_loopback_by_default():
    app = ROOT / "aftlab" / "app" / "ui.py"
    sources = [app.read_text()] + [(ROOT / "aftlab" / "cli.py").read_text()]
    problems, seen = zip(*(_loopback_problems(s) for s in sources))
    assert [p for ps in problems for p in ps] == [] and sum(seen) >= 2  # both the app and the CLI bind somewhere
    from aftlab.cli import build_parser
    assert build_parser().parse_args(["app"]).host in LOOPBACK
    import inspect

    from aftlab.app import ui as mod
    assert inspect.signature(mod.launch).parameters["host"].default in LOOPBACK
