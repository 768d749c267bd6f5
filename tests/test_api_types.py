"""The typed public API: submit's keywords from the options table, ctx and the hooks annotated,
mypy clean on the public modules, and Python spellings in the errors of the Python API."""
import dataclasses
import inspect
import os
import subprocess
import sys

import pytest
from conftest import ROOT, job

import elearn
from elearn.driver.options import SubmitOptions, keywords_source
from elearn.train.context import TrainContext

# A user's code as a type checker reads it: each line marked "error" must be flagged, and
# nothing else (the package's own modules included).
USER_CODE = '''
import elearn
from elearn import SparkTFJob, TrainContext


class Job(SparkTFJob):
    def train(self, ctx: TrainContext) -> None:
        ctx.dataset(label="y", batch_size=64, drop_remainder=True, dense=["tf"])
        ctx.dataset(label="y", batch_sise=64)  # error: batch_sise
        ctx.steps_per_epoch("64")  # error: a str for an int


result = elearn.submit(Job, ps=1, workers=2, args={"epochs": 3}, conf={"spark.x": "1"})
print(result.metrics, result.summary_path, result.step)
elearn.submit("job.py", worker=2)  # error: worker
elearn.submit("job.py", ps="1")  # error: a str for an int
elearn.submit(42)  # error: not a job
'''


def test_mypy_is_clean_on_the_public_modules_and_types_the_users_code(tmp_path):
    import tomllib

    # A module name of its own: mypy's cache would replay another run's errors under its old path.
    user = tmp_path / f"user_code_{os.urandom(4).hex()}.py"
    user.write_text(USER_CODE)
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        public = tomllib.load(f)["tool"]["mypy"]["files"]
    assert "elearn/submit.py" in public and "elearn/train/context.py" in public
    out = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", os.path.join(ROOT, ".mypy_cache"),
                          *public, str(user)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    text = out.stdout + out.stderr
    flagged = {int(line.split(":")[1]) for line in text.splitlines()
               if line.startswith(str(user)) and ": error:" in line}
    expected = {n for n, line in enumerate(USER_CODE.splitlines(), 1) if "# error" in line}
    assert flagged == expected, text
    others = [line for line in text.splitlines() if ": error:" in line and not line.startswith(str(user))]
    assert not others, text   # the public modules (pyproject's [tool.mypy] files) are clean


def test_submit_keywords_are_generated_from_the_options_table():
    with open(os.path.join(ROOT, "elearn", "driver", "keywords.py")) as f:
        assert f.read() == keywords_source(), "stale: run python -m elearn.driver.options"
    from elearn.driver.keywords import SubmitKeywords

    names = [f.name for f in dataclasses.fields(SubmitOptions)]
    assert list(SubmitKeywords.__annotations__) == names
    params = inspect.signature(elearn.submit).parameters
    assert list(params) == ["job", *names]
    assert params["ps"].default == 0 and params["register_timeout"].default == 120.0


def test_the_package_is_marked_typed_and_ctx_keeps_its_internals_private():
    import importlib.resources

    assert importlib.resources.files("elearn").joinpath("py.typed").is_file()
    public = {n for n in dir(TrainContext) if not n.startswith("_")}
    public |= {f.name for f in dataclasses.fields(TrainContext) if not f.name.startswith("_")}
    assert not public & {"backend", "outputs", "record", "note_step", "checkpointer"}, public
    signature = inspect.signature(TrainContext.dataset)
    assert "kwargs" not in signature.parameters and "drop_remainder" in signature.parameters
    assert signature.parameters == {**inspect.signature(TrainContext.dataset_fn).parameters}
    hooks = {name: inspect.signature(getattr(elearn.SparkTFJob, name))
             for name in ("pre_train", "train", "shutdown", "post_train", "variable_partitioner")}
    assert all(s.return_annotation is not inspect.Signature.empty for s in hooks.values()), hooks


@pytest.mark.parametrize("options, message", [
    ({"args": "epochs=3"}, "args='epochs=3': pass a dict, args={'epochs': 3}"),
    ({"conf": "spark.executor.memory=4g"}, "conf={'spark.executor.memory': '4g'}"),
    ({"worker": 2}, "unknown option(s) worker=; did you mean workers=?"),
    ({"num_executors": 3}, "conf={'spark.executor.instances': N}"),
    ({"ps": "two"}, "ps= must be a whole number, got 'two'"),
])
def test_python_errors_speak_python(options, message):
    """Refused before anything starts, in the spelling the caller used: keywords, not flags."""
    with pytest.raises(elearn.ElearnError) as err:
        elearn.submit(job("linear_fit.py"), **options)
    assert message in str(err.value)
    assert "--" not in str(err.value).split(";")[0].replace("--arg", "").replace("--conf", "")


def test_importing_the_module_of_submit_or_predict_keeps_the_function():
    """``from elearn.submit import SubmitResult`` must not turn ``elearn.submit`` into a module."""
    code = ("from elearn.submit import SubmitResult\nfrom elearn.predict import predict\nimport elearn\n"
            "assert callable(elearn.submit) and elearn.submit.__module__ == 'elearn.submit'\n"
            "assert callable(elearn.predict) and elearn.predict.__module__ == 'elearn.predict'\n"
            "from elearn import submit\nassert submit is elearn.submit\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
