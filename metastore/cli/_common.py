"""What every command group shares: options with environment twins, checked values, output.

**The environment twin rule.** Every option has one environment variable,
named from the command and the option: ``METASTORE_`` + the command's words
+ the option's long name, upper case, ``-`` as ``_``. ``metastore ingest
folder --workers`` is ``METASTORE_INGEST_FOLDER_WORKERS``, ``metastore
stats --json`` is ``METASTORE_STATS_JSON``; the options before the command
(``--log-level``) have no command words: ``METASTORE_LOG_LEVEL``. The one
exception is ``--db``, whose twin is ``METASTORE_DATABASE_URL``. Every
option's help shows its twin. A value on the command line wins over the
twin. A twin's value is checked like the option's (a bad one is a usage
error of the command that reads it, exit 2); flags take
``1/true/yes/on`` or ``0/false/no/off``; a repeatable option's twin holds
one value a line.

This module imports nothing heavy: ``metastore --help`` loads only the
command line; each command imports the library when it runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metastore.store import MetaStore

log = logging.getLogger("metastore.cli")

Handler = Callable[[argparse.Namespace], int]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def env_name(prog: str, option: str) -> str:
    """The environment twin of ``option`` of the command ``prog`` (see the module doc)."""
    words = [*prog.split()[1:], option.lstrip("-")]
    return "METASTORE_" + "_".join(words).upper().replace("-", "_")


class BadEnv(str):
    """An environment twin's value that does not check: a usage error if the command reads it."""

    message: str

    def __new__(cls, message: str) -> BadEnv:
        made = super().__new__(cls, message)
        made.message = message
        return made


class EnvDefault(argparse.Action):
    """An option whose default comes from its ``METASTORE_*`` environment twin."""

    def __init__(self, option_strings: list[str], dest: str, env: str, **kwargs: Any) -> None:
        self.env = env
        if env in os.environ:
            try:
                kwargs["default"] = self.from_env(os.environ[env], kwargs)
            except (ValueError, TypeError, argparse.ArgumentTypeError) as err:
                kwargs["default"] = BadEnv(f"${env}={os.environ[env]!r}: {err}")
            kwargs["required"] = False
        kwargs["help"] = f"{kwargs.get('help', '')} [env: {env}]".strip()
        super().__init__(option_strings, dest, **kwargs)

    def from_env(self, text: str, kwargs: dict[str, Any]) -> Any:
        """The default, from the environment twin's text (checked as the option is)."""
        value = (kwargs.get("type") or str)(text)
        choices = kwargs.get("choices")
        if choices is not None and value not in choices:
            raise ValueError(f"must be one of {', '.join(map(str, choices))}")
        return value

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, self.value(namespace, values))

    def value(self, namespace: argparse.Namespace, values: Any) -> Any:
        """What the option sets, given on the command line."""
        return values


class EnvFlag(EnvDefault):
    """A boolean flag with an environment twin (``1/true/yes/on`` or ``0/false/no/off``)."""

    def __init__(self, option_strings: list[str], dest: str, env: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, env, nargs=0, default=False, **kwargs)

    def from_env(self, text: str, kwargs: dict[str, Any]) -> Any:
        word = text.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ValueError("a flag's twin is 1/true/yes/on or 0/false/no/off")
        return word in _TRUE

    def value(self, namespace: argparse.Namespace, values: Any) -> Any:
        return True


class EnvAppend(EnvDefault):
    """A repeatable option; its environment twin holds one value a line."""

    def __init__(self, option_strings: list[str], dest: str, env: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, env, **kwargs)
        if self.default is None:
            self.default = []

    def from_env(self, text: str, kwargs: dict[str, Any]) -> Any:
        convert = kwargs.get("type") or str
        return [convert(line) for line in text.splitlines() if line.strip()]

    def value(self, namespace: argparse.Namespace, values: Any) -> Any:
        current = getattr(namespace, self.dest, None)
        if current is None or current is self.default:
            current = []
        return [*current, values]


def check_env(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A usage error (exit 2) for an environment twin of the chosen command that does not check."""
    for value in vars(args).values():
        if isinstance(value, BadEnv):
            parser.error(value.message)


def _add(
    parser: argparse.ArgumentParser,
    action: type[EnvDefault],
    names: tuple[str, ...],
    env: str | None,
    kwargs: dict[str, Any],
) -> None:
    long_name = next((n for n in names if n.startswith("--")), names[0])
    parser.add_argument(
        *names, action=action, env=env or env_name(parser.prog, long_name), **kwargs
    )


def option(
    parser: argparse.ArgumentParser, *names: str, env: str | None = None, **kwargs: Any
) -> None:
    """Add an option with its environment twin (named by the rule; ``env`` only for ``--db``)."""
    _add(parser, EnvDefault, names, env, kwargs)


def flag(
    parser: argparse.ArgumentParser, *names: str, env: str | None = None, **kwargs: Any
) -> None:
    """Add a boolean flag with its environment twin."""
    _add(parser, EnvFlag, names, env, kwargs)


def repeated(
    parser: argparse.ArgumentParser, *names: str, env: str | None = None, **kwargs: Any
) -> None:
    """Add a repeatable option with its environment twin (one value a line)."""
    _add(parser, EnvAppend, names, env, kwargs)


def _number(kind: type[int] | type[float], low: float, inclusive: bool) -> Callable[[str], Any]:
    what = "a whole number" if kind is int else "a number"
    bound = f"{'at least' if inclusive else 'more than'} {kind(low)}"

    def check(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(f"{text!r}: must be {bound}")
        return value

    check.__name__ = f"{kind.__name__} ({bound})"
    return check


#: Option types that refuse what makes no sense (``--limit -5``).
positive_int = _number(int, 1, inclusive=True)
count_int = _number(int, 0, inclusive=True)
positive_float = _number(float, 0, inclusive=False)
non_negative_float = _number(float, 0, inclusive=True)


def key_value(item: str) -> tuple[str, str]:
    """A ``--query KEY=VALUE`` item as (key, value)."""
    from metastore.errors import ConfigurationError

    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigurationError(f"--query {item!r} is not KEY=VALUE")
    return key, value


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    """What a command that runs workers takes: credentials for the source, the lease."""
    repeated(
        parser, "--header", metavar="'NAME: VALUE'", help="an HTTP header to send (repeatable)"
    )
    option(parser, "--token-env", metavar="VAR", default=None, help="send the bearer token in $VAR")
    option(
        parser, "--lease", type=positive_float, default=60.0, help="seconds a worker holds a job"
    )


def add_prefetch_option(parser: argparse.ArgumentParser) -> None:
    """``--prefetch``: series a worker reads ahead while it writes (0: none)."""
    option(
        parser,
        "--prefetch",
        type=count_int,
        default=2,
        help="series each worker reads ahead while it writes (0: read, then write)",
    )


def add_dicomweb_options(parser: argparse.ArgumentParser) -> None:
    """A DICOMweb pull's options (``ingest dicomweb``, ``sync dicomweb``): the archive, the workers.

    ``dicomweb_settings(args)`` gives the source settings they set.
    """
    parser.add_argument("root", metavar="ROOT", help="the DICOMweb root URL (QIDO-RS and WADO-RS)")
    option(parser, "--source", metavar="NAME", default=None, help="source name (default: the host)")
    repeated(parser, "--query", metavar="KEY=VALUE", help="a QIDO-RS query parameter (repeatable)")
    option(parser, "--workers", type=positive_int, default=1, help="worker processes")
    option(parser, "--page-size", type=positive_int, default=None, help="QIDO-RS page size")
    option(
        parser,
        "--timeout",
        type=positive_float,
        default=None,
        help="seconds to wait for a response",
    )
    option(
        parser, "--retries", type=count_int, default=None, help="tries after the first, per request"
    )
    option(
        parser,
        "--max-attempts",
        type=positive_int,
        default=5,
        help="attempts per study before it fails",
    )
    add_prefetch_option(parser)
    add_worker_options(parser)


def dicomweb_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The source settings ``add_dicomweb_options`` set (None: the source's default)."""
    return {"page_size": args.page_size, "timeout": args.timeout, "retries": args.retries}


def command_group(commands: Any, name: str, help: str, metavar: str = "KIND") -> Any:
    """The subcommands of the group ``name`` (``ingest``...), created on first use.

    Several areas add commands to one group; whoever comes first creates it.
    """
    parser = commands.choices.get(name)
    if parser is None:
        parser = commands.add_parser(name, help=help)
        group = parser.add_subparsers(dest=f"{name}_command", metavar=metavar, required=True)
        parser.set_defaults(**{f"_{name}_group": group})
    return parser.get_default(f"_{name}_group")


def print_json(value: Any) -> None:
    """One JSON document on stdout (indented for a person)."""
    import orjson

    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


def print_json_line(value: Any) -> None:
    """One JSON line on stdout (for pipes)."""
    import orjson

    sys.stdout.write(orjson.dumps(value, default=str).decode() + "\n")


def open_store(args: argparse.Namespace, *, read_only: bool = False) -> MetaStore:
    """The store named by ``--db`` / ``METASTORE_DATABASE_URL`` / the default.

    ``read_only``: for commands that only read; an SQLite database is opened
    read-only and must exist (a read never creates one).
    """
    from metastore.store import MetaStore

    return MetaStore(args.db, read_only=read_only)


def print_table(header: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Rows as aligned columns under ``header`` (a missing value shows as ``-``)."""
    table = [tuple(header)] + [
        tuple("-" if row[key] is None else str(row[key]) for key in header) for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM, so live commands finish their current work."""
    stop = threading.Event()

    def _set(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping", signum)
        stop.set()

    previous = {sig: signal.signal(sig, _set) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
