"""A name -> object table with guard rails (lm-evaluation-harness' ``Registry``): a clashing
name is refused when registered, an unknown one fails with the list of known ones."""

from __future__ import annotations

__all__ = ["Registry"]


class Registry(dict):
    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def register(self, name: str, obj) -> None:
        if name in self:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        super().__setitem__(name, obj)

    def __getitem__(self, name: str):
        try:
            return super().__getitem__(name)
        except KeyError:
            raise KeyError(f"unknown {self.what} {name!r}; known: {', '.join(sorted(self))}") from None
