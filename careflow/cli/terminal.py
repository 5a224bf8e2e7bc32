"""The CLI's rich consoles: a terminal's own width on screen, no width limit in files and pipes.

rich falls back to 80 columns when it finds no terminal, so ``careflow events > file`` folded
every reason into a column a few characters wide. Output that no screen will show keeps each
row on one line instead, however long; on a terminal tables still fit the window.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console, ConsoleDimensions

# Wide enough for any row careflow prints; tables take only the width their cells need.
UNBOUNDED_WIDTH = 10_000


class OutputConsole(Console):
    """A rich ``Console`` whose width is unbounded when it does not write to a terminal."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._fixed_width = kwargs.get("width") is not None  # an explicit width always wins

    @property
    def size(self) -> ConsoleDimensions:
        dimensions = super().size
        if self._fixed_width or self.is_terminal:
            return dimensions
        return ConsoleDimensions(UNBOUNDED_WIDTH, dimensions.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._fixed_width = True
        self._width, self._height = new_size
