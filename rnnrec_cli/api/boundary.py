"""The API's error boundary: library calls raise RnnrecError naming fields, never flags or
Python's own TypeError for a setting that does not exist."""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable
from typing import Any, TypeVar

from rnnrec_cli.errors import ConfigError, RnnrecError
from rnnrec_cli.options import CompareOptions, EvalOptions, PredictOptions, TuneOptions

F = TypeVar("F", bound=Callable[..., Any])


# Flags whose name is not their field's (`--keep-repeats` sets dedupe_consecutive the other way).
_FLAG_FIELDS = {
    "--bootstrap": "n_boot", "--k": "ks", "-k": "k", "--sampled": "n_sampled", "--task": "tasks",
    "--keep-repeats": "dedupe_consecutive", "--collapse-repeats": "dedupe_consecutive", "--no-header": "header",
    "--eval": "evaluation", "--space": "space", "--study": "study",
}  # fmt: skip


def fields_named(message: str) -> str:
    """A library message in field names: the checks behind the configs are shared with the
    command line and name its flags; each flag is named after its field, so this maps back."""
    from rnnrec_cli.config import ModelConfig, PrepareConfig, TrainConfig

    known = {f.name for cls in (PrepareConfig, ModelConfig, TrainConfig, EvalOptions, PredictOptions, TuneOptions,
                                CompareOptions) for f in dataclasses.fields(cls)}  # fmt: skip

    def field_of(m: re.Match[str]) -> str:
        flag = m.group(0)
        name = _FLAG_FIELDS.get(flag, flag.lstrip("-").replace("-", "_"))
        return name if name in known or flag in _FLAG_FIELDS else flag

    return re.sub(r"(?<![\w-])--?[a-z][a-z0-9-]*", field_of, message)


def library(fn: F) -> F:
    """Errors of a library call name fields (`n_boot`), not command-line flags (`--bootstrap`)."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RnnrecError as exc:
            exc.args = (fields_named(str(exc)), *exc.args[1:])
            raise
        except TypeError as exc:  # a setting no config or option class has
            unknown = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
            if unknown is None:
                raise
            raise ConfigError(
                f"{fn.__name__}: no setting named {unknown.group(1)!r}; see help(rnnrec_cli.{fn.__name__})"
            ) from None

    return call  # type: ignore[return-value]
