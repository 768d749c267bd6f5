"""pl_submit: run an elearn job on Spark, in the style of spark-submit.

The flags are the fields of ``elearn.driver.options.SubmitOptions``; ``--conf``, ``--arg`` and ``--fill`` may
be repeated. The whole command line is checked against them before anything starts (fire would
otherwise call the job first and complain about a mistyped flag only when it returns), then fire
parses it.
"""
from __future__ import annotations

import inspect
import os
import signal
import sys
from dataclasses import MISSING

import fire

from elearn.driver.options import SubmitOptions, coerce, option_fields, suggestion
from elearn.errors import ElearnError


class UsageError(ElearnError):
    """The command line names a flag that does not exist, or a value of the wrong kind."""


def _flags() -> dict:
    """``{"--ps": field, ...}``: every flag, hyphenated."""
    return {f.metadata["flag"].flag(f.name): f for f in option_fields()}


def run(job_file: str, **flags):
    """Run JOB_FILE's SparkTFJob subclass on Spark with TensorFlow.

    pl_submit my_job.py --ps 2 --workers 8 --master yarn --conf spark.executor.memory=8g --arg epochs=3
    """
    from elearn import submit

    by_flag = {f.metadata["flag"].cli or f.name: f.name for f in option_fields()}
    result = submit(job_file, **{by_flag[k]: v for k, v in flags.items()})
    if not result.ok:
        if result.traceback:
            print(result.traceback, file=sys.stderr, end="")
        print(f"pl_submit: {result.error}", file=sys.stderr)
        raise SystemExit(1)


def _signature() -> inspect.Signature:
    """``run``'s signature as fire sees it: the job file, then one keyword per option."""
    params = [inspect.Parameter("job_file", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str)]
    for f in option_fields():
        # KEY=VALUE options (a dict factory) arrive from fire as lists: None when absent.
        default = None if f.default is MISSING else f.default
        params.append(inspect.Parameter(f.metadata["flag"].cli or f.name,
                                        inspect.Parameter.KEYWORD_ONLY, default=default))
    return inspect.Signature(params)


run.__signature__ = _signature()


# spark-submit's spellings pl_submit takes as they are: -c is --conf; --verbose ("print additional
# debug output") lets TensorFlow's and Spark's own logs through, as --tf-log does.
ALIASES = {"-c": "--conf", "--verbose": "--tf-log", "-v": "--tf-log"}


def normalize(argv: list[str]) -> list[str]:
    """``argv`` with spark-submit's short spellings replaced by pl_submit's flags."""
    out = []
    for token in argv:
        name, eq, value = token.partition("=")
        out.append(ALIASES[name] + eq + value if name in ALIASES else token)
    return out


def check_argv(argv: list[str]) -> None:
    """Refuse unknown flags, missing values and values of the wrong kind, naming the fix."""
    flags = _flags()
    positionals = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("--"):
            name, has_value, value = token.partition("=")
            canonical = "--" + name[2:].replace("_", "-")
            f = flags.get(canonical)
            if f is None:
                hint = suggestion(canonical, sorted(flags))
                raise UsageError(f"unknown flag {name}" + (f": {hint}" if hint else "")
                                 + " (pl_submit --help lists every flag)")
            if str(f.type).startswith("bool"):
                if has_value:
                    coerce(f, value)
            else:
                if not has_value:
                    if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                        metavar = f.metadata["flag"].metavar or "VALUE"
                        raise UsageError(f"{canonical} needs a value ({canonical} {metavar})")
                    i += 1
                    value = argv[i]
                coerce(f, value)
        elif token.startswith("-") and len(token) > 1:
            raise UsageError(f"unknown flag {token} (pl_submit --help lists every flag)")
        else:
            positionals.append(token)
        i += 1
    pairs = [p for p in positionals[1:] if "=" in p and not p.startswith("=")]
    if pairs:
        raise UsageError(f"unexpected {' '.join(pairs)} after the job file: job arguments are given as "
                         + " ".join(f"--arg {p}" for p in pairs))
    if len(positionals) != 1:
        raise UsageError("expected one JOB_FILE" + (f", got {' '.join(positionals)}" if positionals
                                                     else "") + " (pl_submit --help shows the usage)")


def _gather_repeats(argv: list[str]) -> list[str]:
    """fire keeps only the last of a repeated flag; fold ``--conf a --conf b`` into one list."""
    repeatable = {f.metadata["flag"].flag(f.name) for f in option_fields() if f.metadata["flag"].repeatable}
    out, found = [], {}
    i = 0
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        canonical = "--" + name[2:].replace("_", "-") if name.startswith("--") else name
        if canonical in repeatable:
            if not eq:
                value = argv[i + 1]
                i += 1
            found.setdefault(canonical, []).append(value)
        else:
            out.append(argv[i])
        i += 1
    for name, values in found.items():
        out += [name, repr(values)]
    return out


def versions() -> str:
    """elearn's, Spark's and TensorFlow's versions, read from package metadata (no imports)."""
    from importlib.metadata import PackageNotFoundError, version

    def of(dist):
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    return (f"elearn {of('elearn')}\nSpark (pyspark) {of('pyspark')}\nTensorFlow {of('tensorflow')}\n"
            f"Python {sys.version.split()[0]}")


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] == "help" or "-h" in argv or "--help" in argv:
        from plsubmit.help import render

        print(render(run))
        raise SystemExit(0 if argv else 2)
    if argv == ["--version"]:
        print(versions())
        raise SystemExit(0)
    signal.signal(signal.SIGTERM, _terminate)
    code = 0
    try:
        if argv[0] in ("list", "status", "kill"):
            from plsubmit import control

            control.check_argv(argv)
            code = fire.Fire(control.COMMANDS, argv, name="pl_submit") or 0
        else:
            argv = normalize(argv)
            check_argv(argv)
            code = fire.Fire(run, _gather_repeats(argv), name="pl_submit")
    except KeyboardInterrupt:
        print("pl_submit: interrupted; the application was stopped", file=sys.stderr)
        code = 130
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except ElearnError as exc:  # a usage, option or job-file error: nothing was started
        print(f"pl_submit: {exc}", file=sys.stderr)
        code = 2
    sys.stdout.flush()
    sys.stderr.flush()
    # TensorFlow's coordinator threads can stall interpreter exit; everything of ours is stopped.
    os._exit(code if isinstance(code, int) else 0)


__all__ = ["main", "run", "check_argv", "SubmitOptions"]


if __name__ == "__main__":
    main()
