"""Command lines spelled the way Go's ``flag`` package takes them, for every subcommand.

``weed`` users write ``-filer=host:8888``; Python users write ``--filer host:8888``. People
copy lines between ``weed mount``, ``seaweed-rdma mount`` and the other subcommands, so every
subcommand takes both. The rules, applied before argparse sees the command line:

- ``-name`` and ``--name`` are the same flag; its value may follow as ``=value`` or as the
  next argument (``-filer=H:P``, ``-filer H:P``, ``--filer=H:P``, ``--filer H:P``).
- A boolean flag alone means true; ``-name=false`` (or ``0``, ``no``, ``off``) turns it off.
  ``-name true`` / ``-name false`` work too, but only those two words are taken from the
  next argument, so a path after a boolean flag is never eaten.
- Single-letter flags (``-l``, ``-h``) stay as they are, and so does a negative number.
- ``--`` ends the flags; everything after it is positional.
- Flag names are never abbreviated (Go does not, and a prefix could hide a typo).

:class:`FlagParser` is the one parser all subcommands use; :func:`go_spelling` is the
rewriting itself, also used for the sidecar, whose flags the Rust side parses.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Literal

__all__ = ["SPELLING_NOTE", "FlagParser", "go_spelling", "parse_bool"]

Kind = Literal["bool", "value", "switch"]

TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y", "on"})
FALSE_WORDS = frozenset({"0", "false", "f", "no", "n", "off"})

SPELLING_NOTE = ("Flags take one dash or two, and a value after '=' or as the next argument "
                 "(-filer=HOST:PORT, --filer HOST:PORT); a boolean flag alone means true, "
                 "-name=false turns it off.")


def parse_bool(text: str) -> bool:
    """``true``/``false`` and the other words Go's ``strconv.ParseBool`` takes."""
    low = text.lower()
    if low in TRUE_WORDS:
        return True
    if low in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def go_spelling(argv: Sequence[str], kinds: Mapping[str, Kind] | None = None,
                ignorable: Mapping[str, bool] | None = None,
                stop_at_positional: bool = False) -> tuple[list[str], list[str]]:
    """Rewrites ``argv`` into the spelling argparse (and clap) take.

    ``kinds`` maps option strings (``"--stats"``, ``"-l"``) to what they take: a boolean
    becomes ``NAME=true|false``, and the argument after a value flag given without ``=`` is
    passed on untouched (it is that flag's value, even if it starts with a dash). Flags
    named in ``ignorable`` (without dashes; the value says whether the flag takes a value)
    are removed and their names returned, to be warned about. With ``stop_at_positional``
    (a parser whose first positional is a subcommand) rewriting stops at the first
    positional: the subcommand's own parser rewrites the rest.

    Returns the rewritten arguments and the ignored flag names.
    """
    kinds = kinds or {}
    ignorable = ignorable or {}
    out: list[str] = []
    ignored: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            out += argv[i - 1:]
            break
        if not arg.startswith("-") or arg == "-" or _is_number(arg):
            out.append(arg)
            if stop_at_positional:
                out += argv[i:]
                break
            continue
        if not arg.startswith("--") and len(arg.partition("=")[0]) > 2:
            arg = "-" + arg
        name, eq, value = arg.partition("=")
        if name.startswith("--") and name[2:] in ignorable:
            ignored.append(name[2:])
            if ignorable[name[2:]] and not eq:
                i += 1  # its value
            continue
        kind = kinds.get(name)
        if kind == "bool":
            if not eq:
                value = "true"
                if i < len(argv) and argv[i].lower() in ("true", "false"):
                    value = argv[i]
                    i += 1
            arg = f"{name}={value}"
        out.append(arg)
        if kind == "value" and not eq and i < len(argv):
            out.append(argv[i])
            i += 1
    return out, ignored


class FlagParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` that takes Go's flag spellings (see the module's rules).

    Add boolean flags with :meth:`add_bool` (``action="store_true"`` is refused: it could
    not take ``-name=false``). Subparsers made from it are ``FlagParser`` s too. When
    ``ignorable`` is given (flag name -> takes a value), those flags are accepted and
    dropped, and the parsed namespace lists their names in ``ignored``.
    """

    def __init__(self, *args: Any, ignorable: Mapping[str, bool] | None = None,
                 **kwargs: Any) -> None:
        # argparse's __init__ adds -h/--help through add_argument, which records kinds.
        self._kinds: dict[str, Kind] = {}
        self._ignorable = dict(ignorable or {})
        self._has_commands = False
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("epilog", SPELLING_NOTE)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        if kwargs.get("action") in ("store_true", "store_false"):
            raise ValueError(f"{args}: use FlagParser.add_bool for boolean flags")
        action = super().add_argument(*args, **kwargs)
        kind: Kind = "switch" if action.nargs == 0 else "value"
        for option in action.option_strings:
            self._kinds[option] = kind
        return action

    def add_bool(self, *names: str, default: bool = False, help: str | None = None,
                 dest: str | None = None) -> argparse.Action:
        """A boolean flag: ``-name``, ``-name=true``, ``-name=false``, ``-name false``."""
        extra: dict[str, Any] = {} if dest is None else {"dest": dest}
        action = self.add_argument(*names, nargs="?", const=True, default=default,
                                   type=parse_bool, metavar="true|false", help=help, **extra)
        for option in action.option_strings:
            self._kinds[option] = "bool"
        return action

    def add_subparsers(self, **kwargs: Any) -> Any:
        self._has_commands = True
        return super().add_subparsers(**kwargs)

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        argv = list(sys.argv[1:] if args is None else args)
        rewritten, ignored = go_spelling(argv, self._kinds, self._ignorable,
                                         stop_at_positional=self._has_commands)
        ns, rest = super().parse_known_args(rewritten, namespace)
        if self._ignorable:
            ns.ignored = ignored
        return ns, rest
