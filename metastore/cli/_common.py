"""What every command group shares: options with environment twins, output, the store.

Every option has an environment twin named ``METASTORE_<OPTION>`` (``--db``
is ``METASTORE_DATABASE_URL``), shown in its help.
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
from typing import Any

import orjson

from metastore.store import MetaStore

log = logging.getLogger("metastore.cli")

Handler = Callable[[argparse.Namespace], int]


class EnvDefault(argparse.Action):
    """An option whose default comes from its ``METASTORE_*`` environment twin."""

    def __init__(self, option_strings: list[str], dest: str, env: str, **kwargs: Any) -> None:
        self.env = env
        if env in os.environ:
            kwargs["default"] = self.from_env(os.environ[env], kwargs)
            kwargs["required"] = False
        kwargs["help"] = f"{kwargs.get('help', '')} [env: {env}]".strip()
        super().__init__(option_strings, dest, **kwargs)

    def from_env(self, text: str, kwargs: dict[str, Any]) -> Any:
        """The default, from the environment twin's text."""
        return (kwargs.get("type") or str)(text)

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
    """A boolean flag with an environment twin (1/true/yes turns it on)."""

    def __init__(self, option_strings: list[str], dest: str, env: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, env, nargs=0, default=False, **kwargs)

    def from_env(self, text: str, kwargs: dict[str, Any]) -> Any:
        return text.lower() in ("1", "true", "yes", "on")

    def value(self, namespace: argparse.Namespace, values: Any) -> Any:
        return True


class EnvAppend(EnvDefault):
    """A repeatable option; its environment twin holds one value a line."""

    def __init__(self, option_strings: list[str], dest: str, env: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, env, **kwargs)
        if self.default is None:
            self.default = []

    def from_env(self, text: str, kwargs: dict[str, Any]) -> Any:
        return [line for line in text.splitlines() if line.strip()]

    def value(self, namespace: argparse.Namespace, values: Any) -> Any:
        current = getattr(namespace, self.dest, None)
        if current is None or current is self.default:
            current = []
        return [*current, values]


def _add(
    parser: argparse.ArgumentParser,
    action: type[EnvDefault],
    names: tuple[str, ...],
    env: str | None,
    kwargs: dict[str, Any],
) -> None:
    dest = kwargs.get("dest") or names[0].lstrip("-").replace("-", "_")
    twin = env or f"METASTORE_{dest.upper()}"
    parser.add_argument(*names, action=action, env=twin, **kwargs)


def option(
    parser: argparse.ArgumentParser, *names: str, env: str | None = None, **kwargs: Any
) -> None:
    """Add an option with its environment twin (``METASTORE_<NAME>`` unless given)."""
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
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")


def print_json_line(value: Any) -> None:
    """One JSON line on stdout (for pipes)."""
    sys.stdout.write(orjson.dumps(value, default=str).decode() + "\n")


def open_store(args: argparse.Namespace) -> MetaStore:
    """The store named by ``--db`` / ``METASTORE_DATABASE_URL`` / the default."""
    return MetaStore(args.db)


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
