"""Name → class registries shared by the rules and the attacks (and the CLI)."""
from __future__ import annotations

from typing import Callable, Dict, List


class Registry:
    """``@registry.register("name")`` on a class sets ``cls.name``; ``build``
    constructs by name and turns unknown names and bad parameters into
    ``ValueError`` messages that list the choices."""

    def __init__(self, kind: str):
        self.kind = kind
        self._classes: Dict[str, type] = {}

    def register(self, name: str) -> Callable[[type], type]:
        def deco(cls: type) -> type:
            cls.name = name
            self._classes[name] = cls
            return cls
        return deco

    def available(self) -> List[str]:
        return sorted(self._classes)

    def cls(self, name: str) -> type:
        if name not in self._classes:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(self.available())}")
        return self._classes[name]

    def build(self, name: str, **params):
        cls = self.cls(name)
        try:
            return cls(**params)
        except TypeError as e:
            raise ValueError(f"bad parameters for {self.kind} {name!r}: {e}") from None
