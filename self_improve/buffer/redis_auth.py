"""The Redis store's password: named by an environment variable, never written in an argument.

verifiers saves the env args it was given in the results' ``metadata.json`` and logs them in
``env_server.log``; prime-rl writes them into its sub-configs and sends its whole config to the
experiment tracker. So the password must not be an env arg: ``buffer_url`` may hold a user
name (``redis://USER@HOST:6379/0``, an ACL user) but no password, and ``buffer_password_var``
names the environment variable that holds it, read by each worker when it connects (the way
``vf-eval -k API_KEY_VAR`` and prime-rl's ``api_key_var`` take a key). See docs/redis.md.

No ``redis`` import here: ``exit_config`` checks the arguments before any data loads, with or
without the client installed.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

URL_SCHEMES: tuple[str, ...] = ("redis://", "rediss://", "unix://")
"""How a Redis URL starts (``buffer_url``, and a viewer SOURCE that names a live buffer)."""
SCHEMES_TEXT = ", ".join(URL_SCHEMES[:-1]) + " or " + URL_SCHEMES[-1]
"""The schemes as an error message names them."""


def is_redis_url(text: str) -> bool:
    """Whether ``text`` is a Redis URL (starts with one of ``URL_SCHEMES``) rather than a path."""
    return text.startswith(URL_SCHEMES)


def check_buffer_url(url: str) -> None:
    """Refuse a ``buffer_url`` that carries a password (in its user info, or a query parameter
    such as ``?password=``); the message never repeats the URL's secret."""
    try:
        parts = urlsplit(url)
        in_query = [name for name, _ in parse_qsl(parts.query, keep_blank_values=True) if "password" in name.lower()]
        has_password = parts.password is not None or bool(in_query)
    except ValueError:
        raise ValueError(f"buffer_url: must be a {SCHEMES_TEXT} URL; it does not parse "
                         "(not shown: it may hold a secret)") from None
    if has_password:
        where = f"the query parameter {in_query[0]!r}" if in_query else "its user info (user:password@)"
        raise ValueError(f"buffer_url: must not hold a password (found in {where}): env args are saved with "
                         "the results and logged; put the password in an environment variable and give its "
                         "name as buffer_password_var (a user name may stay: redis://USER@HOST:6379/0)")


def check_password_var(name: str) -> None:
    """Refuse a ``buffer_password_var`` that is not an environment variable's name (the password
    itself, by mistake, is not repeated)."""
    if not isinstance(name, str) or not _VARIABLE_NAME.fullmatch(name):
        raise ValueError("buffer_password_var: must be the name of an environment variable (letters, digits "
                         "and _, not starting with a digit), not the password itself; got something else "
                         "(not shown: it may be the password)")


def read_password(name: str) -> str:
    """The password held by the environment variable ``name``; ``ValueError`` naming the
    argument and the variable when it is unset or empty."""
    check_password_var(name)
    password = os.environ.get(name, "")
    if not password:
        state = "empty" if name in os.environ else "unset"
        raise ValueError(f"buffer_password_var: the environment variable {name} is {state}; export the Redis "
                         "password in it for every env worker (or set buffer_password_var to null for a "
                         "server without a password)")
    return password


def redact(url: str) -> str:
    """``url`` with any password (user info or ``?password=``) replaced by ``***``, safe to log."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
        query = parts.query
        if "password" in query:
            query = urlencode([(name, "***" if name == "password" else value)
                               for name, value in parse_qsl(query, keep_blank_values=True)], safe="*")
        return urlunsplit(parts._replace(netloc=netloc, query=query))
    except ValueError:
        return "<unparseable URL>"
