"""Options whose value is one of the API's words (a format, a strategy, an environment, a
status): typed in any case, and refused by the CLI itself, naming the option and listing the
words, before a request is sent."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import typer


def _fold(word: str) -> str:
    return word.casefold().replace("-", "_").replace(" ", "_")


def one_of(words: Iterable[str]) -> Callable[[str | None], str | None]:
    """A typer callback: the word as the API spells it (``pytorch`` → ``PyTorch``,
    ``blue-green`` → ``blue_green``), or a usage error naming the option and the choices."""
    spelled = [str(w) for w in words]
    by_fold = {_fold(w): w for w in spelled}

    def normalize(value: str | None) -> str | None:
        if value is None:
            return None
        found = by_fold.get(_fold(value))
        if found is None:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(spelled)} (any case)")
        return found

    return normalize


def listed(words: Iterable[str]) -> str:
    """The words for a help text."""
    return ", ".join(str(w) for w in words)
