"""The layering of elearn's folders is a contract the suite checks (``[tool.importlinter]`` in
pyproject.toml): each folder imports only the folders below it, function-local imports included,
and the modules of a folder import each other without cycles. A process imports only what it runs."""
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINT = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def lint(tree: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": tree}  # this tree's elearn, before the installed one
    return subprocess.run([LINT, "--no-cache"], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_folders_keep_their_layers():
    out = lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Contracts: 2 kept, 0 broken." in out.stdout


def test_a_lower_folder_importing_the_driver_breaks_the_contract(tmp_path):
    """The control: the same check on a copy of the code where the training process's checkpoints
    import the driver's application, in a function, as a shortcut would."""
    for name in ("elearn", "plsubmit"):
        shutil.copytree(os.path.join(ROOT, name), tmp_path / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), tmp_path)
    with open(tmp_path / "elearn" / "train" / "checkpoint.py", "a") as f:
        f.write("\n\ndef _shortcut():\n    from elearn.driver.app import Application\n    return Application\n")
    out = lint(str(tmp_path))
    assert out.returncode != 0
    assert "elearn.train is not allowed to import elearn.driver" in out.stdout
    assert "elearn.train.checkpoint -> elearn.driver.app" in out.stdout


def test_a_tf_server_process_loads_only_what_it_runs():
    """``python -m elearn.runtime.tf_server`` and the training process import a handful of
    elearn's modules, none of the driver's, and neither Spark nor ZooKeeper's client."""
    code = ("import importlib, sys\n"
            "for m in sys.argv[1:]: importlib.import_module(m)\n"
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('elearn', 'pyspark', 'kazoo', 'rich', 'fire'))))")
    for module, most in (("elearn.runtime.tf_server", 6), ("elearn.train.trainer", 12)):
        out = subprocess.run([sys.executable, "-c", code, module], capture_output=True, text=True,
                             timeout=120, check=True)
        loaded = out.stdout.split()
        assert not [m for m in loaded if m.startswith(("elearn.driver", "elearn.submit", "pyspark",
                                                        "kazoo", "rich", "fire"))], loaded
        assert len(loaded) <= most, loaded


SERVER_LIB = """
import sys
from elearn.runtime import tf_server
if sys.argv[1] == "short-way-fails":
    class Refuse:  # server_lib refused while tensorflow is the empty package, as a moved module would be
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow.python.training.server_lib" and (
                    sys.modules["tensorflow"].__loader__ is None):
                raise ImportError("moved")
    sys.meta_path.insert(0, Refuse())
lib = tf_server._import_server_lib()
server = lib.Server(lib.ClusterSpec({"worker": ["localhost:0"]}), job_name="worker", task_index=0,
                    protocol="grpc", start=True)
print(server.target.startswith("grpc://"), "tensorflow.python.eager.context" in sys.modules,
      hasattr(sys.modules["tensorflow"], "__version__"), tf_server._package_dir(lib))
"""


def test_a_tf_server_starts_from_tensorflows_runtime_without_its_python_api():
    """The server imports ``server_lib`` through an empty ``tensorflow`` package (0.5 instead of
    3 CPU-s), and falls back to the full import when that way fails."""
    import importlib.util
    tf_dir = os.path.dirname(importlib.util.find_spec("tensorflow").origin)
    got = {}
    for way in ("short", "short-way-fails"):
        out = subprocess.run([sys.executable, "-c", SERVER_LIB, way], capture_output=True,
                             text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-3000:]
        got[way] = out.stdout.split()
    assert got["short"] == ["True", "False", "False", tf_dir]
    assert got["short-way-fails"] == ["True", "True", "True", tf_dir]
