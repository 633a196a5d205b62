"""The one error type for problems the user can fix (a bad file, folder, setting or workdir).

Every such error of the project is a `UserError` (or a subclass, e.g. the readers' format
errors) carrying `file` (the file, folder or setting at fault) and `problem` (what is wrong and,
where it is not obvious, what to do). The top layer (`main.py`) prints it as one line,
`error: <file>: <problem>`, and exits with its `exit_code` (2); `--debug` shows the traceback
instead. Anything else that escapes is a bug and keeps its traceback.

Below the top nothing prints: library code raises these, `describe` turns one (or an OSError
naming its file) into the line and the exit status.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem in what the user gave: `file` and `problem`, printed as one line."""

    label = "error"
    exit_code = EXIT_USER_ERROR

    def __init__(self, file: str | os.PathLike, problem: str):
        self.file = os.fspath(file)
        self.problem = problem
        super().__init__(f"{self.file}: {problem}" if self.file else problem)

    def line(self) -> str:
        """What the user reads: `<label>: <file>: <problem>`."""
        return f"{self.label}: {self}"


class ConfigError(UserError):
    """A config value that cannot work; `file` is the config (file), the problem names the
    key (`train.batch_size=0: ...`)."""

    def __init__(self, key: str, value: object, problem: str, *, source: str = "config"):
        self.key = key
        super().__init__(source, f"{key}={value!r}: {problem}")


def describe(error: BaseException) -> tuple[str, int] | None:
    """(the one line to print, the exit status) for an error the user can act on: a UserError,
    or an OSError that names its file (a missing file, a full disk, no permission); None for
    anything else (a bug: its traceback is the useful output)."""
    if isinstance(error, UserError):
        return error.line(), error.exit_code
    if isinstance(error, OSError) and error.filename is not None:
        problem = error.strerror or str(error)
        return f"error: {os.fspath(error.filename)}: {problem}", EXIT_USER_ERROR
    return None


def command_line_error(error: Exception, argv: list[str], default_config: str) -> UserError:
    """The UserError for a command line that does not parse: a `--config` file whose
    get_config() fails, a `--config.<key>` the config has no field for, a value of the wrong
    type (absl's flags.Error; its text may hold a whole traceback: the last line says why)."""
    if isinstance(error, KeyError | AttributeError):
        return config_override_error(error, argv, default_config)
    lines = [line for line in str(error).splitlines() if line.strip()]
    if lines and lines[0].startswith("flag --config="):
        file = lines[0].split("=", 1)[1].split(":", 1)[0]
        return UserError(file, f"cannot load it: {lines[-1].strip()}")
    return UserError("command line", lines[0] if lines else type(error).__name__)


def config_override_error(error: Exception, argv: list[str], default_config: str) -> UserError:
    """The UserError for a `--config.<key>=...` flag that the config has no field for (ml
    collections raises it while defining the flag; its text holds the suggestion)."""
    given = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    config_file = (given or [default_config])[0].split(":", 1)[0]
    text = str(error).replace("\\n", "\n")
    suggestion = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', text)
    keys = [a[2:].split("=", 1)[0] for a in argv if a.startswith("--config.")]
    bad = re.findall(r"'([^'\\]+)", text)
    name = bad[0] if bad else ""
    key = next((k for k in keys if k.split(".")[-1] == name or f".{name}." in f".{k}."), name)
    hint = f" (did you mean {suggestion.group(1)!r}?)" if suggestion else ""
    return UserError(config_file, f"no config field {key.removeprefix('config.')!r}{hint}")


@contextlib.contextmanager
def loading_config(config_path: str) -> Iterator[None]:
    """Turns the failure to read a `--config` file (missing, or its get_config() raised;
    ml_collections reports both when the config is first read) into a UserError."""
    try:
        yield
    except Exception as e:
        file = config_path.split(":", 1)[0]
        if not os.path.isfile(file):
            raise UserError(file, "no such config file") from e
        lines = str(e).strip().splitlines()
        raise UserError(file, f"cannot load it: {lines[-1] if lines else type(e)}") from e
