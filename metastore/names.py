"""Names people give things (sources, consumers): one rule for what a name may be."""

from __future__ import annotations

from typing import Any

from metastore.errors import MetastoreError

#: The longest name a ``name`` column holds.
NAME_MAX = 128


def check_name(name: Any, what: str, error: type[MetastoreError], **context: Any) -> str:
    """``name`` if it is a non-empty string of at most ``NAME_MAX`` characters.

    Otherwise raises ``error`` saying ``a <what> name must be ...``, with
    ``context`` as its attributes.
    """
    if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX:
        raise error(
            f"a {what} name must be a non-empty string of at most {NAME_MAX} characters, "
            f"not {name!r}",
            **context,
        )
    return name
