"""One pane: a directory listing of a :class:`~cli.ui.listing.Side` in a DataTable, with
marks and a name filter. Loading and cd are the app's to call (they can fail)."""

from __future__ import annotations

from rich.text import Text
from textual.events import Resize
from textual.widgets import DataTable

from cli.ui.listing import Row, Side, arrange

PARENT = Row("..", True, 0, 0)
SIZE_WIDTH, MTIME_WIDTH = 9, 12


class Pane(DataTable[Text]):
    DEFAULT_CSS = """
    Pane { width: 1fr; height: 1fr; border: round $secondary; }
    Pane:focus { border: round $accent; }
    """

    def __init__(self, side: Side | None, *, id: str) -> None:
        super().__init__(cursor_type="row", id=id)
        self.side = side
        self.rows_shown: list[Row] = []
        self.marked: set[str] = set()
        self.pattern = ""
        self.note = ""  # shown under the listing: the quota bar, marks

    def on_mount(self) -> None:
        self.add_column("Name", key="name", width=self._name_width())
        self.add_column("Size", key="size", width=SIZE_WIDTH)
        self.add_column("Modified", key="mtime", width=MTIME_WIDTH)
        self.border_title = "connecting..." if self.side is None else self.side.cwd

    def on_resize(self, event: Resize) -> None:
        if self.columns:
            self.columns[next(iter(self.columns))].width = self._name_width()
            self.refresh()

    def _name_width(self) -> int:
        # two cells of padding per column, and the border
        return max(8, self.size.width - 2 - SIZE_WIDTH - MTIME_WIDTH - 6)

    @property
    def cwd(self) -> str:
        assert self.side is not None
        return self.side.cwd

    async def load(self, keep: str | None = None) -> None:
        """List the side's directory again, keeping the cursor on ``keep`` (or where it was)."""
        assert self.side is not None
        if keep is None and self.current is not None:
            keep = self.current.name
        rows = arrange(await self.side.rows(self.side.cwd), self.pattern)
        at_root = self.side.parent(self.side.cwd) == self.side.cwd
        self.rows_shown = rows if at_root else [PARENT, *rows]
        names = {r.name for r in self.rows_shown}
        self.marked &= names
        self.clear()
        for row in self.rows_shown:
            self.add_row(*self._cells(row), key=row.name)
        index = next((i for i, r in enumerate(self.rows_shown) if r.name == keep), 0)
        self.move_cursor(row=index)
        self.show_title()

    def _cells(self, row: Row) -> tuple[Text, Text, Text]:
        style = "bold" if row.is_dir else ""
        if row.name in self.marked:
            style += " reverse yellow"
        name = Text(row.name + ("/" if row.is_dir and row is not PARENT else ""), style=style)
        name.truncate(self._name_width(), overflow="ellipsis")
        return name, Text(row.size_text, justify="right"), Text(row.mtime_text)

    def show_title(self) -> None:
        assert self.side is not None
        where = (
            self.side.cwd if self.side.label == "local" else f"{self.side.label}:{self.side.cwd}"
        )
        width = max(10, self.size.width - 4)
        self.border_title = where if len(where) <= width else "..." + where[-(width - 3) :]
        bits = [self.note] if self.note else []
        if self.pattern:
            bits.append(f"filter: {self.pattern}")
        if self.marked:
            bits.append(f"{len(self.marked)} marked")
        self.border_subtitle = "  ".join(bits)

    @property
    def current(self) -> Row | None:
        if not self.rows_shown or not 0 <= self.cursor_row < len(self.rows_shown):
            return None
        return self.rows_shown[self.cursor_row]

    def selection(self) -> list[Row]:
        """The marked rows, or else the one under the cursor (never ``..``)."""
        rows = [r for r in self.rows_shown if r.name in self.marked]
        if not rows and self.current is not None and self.current is not PARENT:
            rows = [self.current]
        return rows

    def toggle_mark(self) -> None:
        row = self.current
        if row is None or row is PARENT:
            return
        self.marked ^= {row.name}
        index = self.cursor_row
        for key, cell in zip(("name", "size", "mtime"), self._cells(row), strict=True):
            self.update_cell(row.name, key, cell)
        self.move_cursor(row=min(index + 1, len(self.rows_shown) - 1))
        self.show_title()
