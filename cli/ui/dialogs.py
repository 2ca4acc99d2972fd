"""Modal dialogs: a yes/no question, a line of text (or a password), and the key help."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

DIALOG_CSS = """
Confirm, Ask, Help { align: center middle; }
#box { width: 72; max-width: 100%; height: auto; border: thick $accent; background: $panel;
       padding: 1 2; }
#box Label { width: 100%; }
#buttons { height: auto; align: right middle; margin-top: 1; }
#buttons Button { margin-left: 1; }
"""


class Confirm(ModalScreen[bool]):
    """A question answered with y/Enter (yes) or n/Esc (no)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "yes", show=False),
        Binding("n,escape", "answer(False)", "no", show=False),
    ]

    def __init__(self, question: str, yes: str = "Yes", no: str = "No") -> None:
        super().__init__()
        self.question, self.yes, self.no = question, yes, no

    def compose(self) -> ComposeResult:
        with Vertical(id="box"):
            yield Label(self.question, markup=False)
            with Horizontal(id="buttons"):
                yield Button(self.yes, id="yes", variant="primary")
                yield Button(self.no, id="no")

    def on_mount(self) -> None:
        self.query_one("#yes", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class Ask(ModalScreen[str | None]):
    """One line of text: Enter gives it, Esc gives None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel", show=False)]

    def __init__(self, question: str, value: str = "", password: bool = False) -> None:
        super().__init__()
        self.question, self.value, self.password = question, value, password

    def compose(self) -> ComposeResult:
        with Vertical(id="box"):
            yield Label(self.question, markup=False)
            yield Input(value=self.value, password=self.password, id="answer")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


KEYS = """\
Tab / click    switch panes
Enter          open a directory
Backspace      parent directory
Space, Ins     mark or unmark (copy and delete take the marked)
F5  or c       copy to the other pane (resumes what is there)
F6  or m       rename or move, within the pane
F7  or n       new directory
F8  or d       delete, after asking
/              filter names (empty: all)
r              refresh both panes
Esc            cancel transfers (a copy again resumes)
q              quit"""


class Help(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark,enter", "close", "close", show=False)
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="box"):
            yield Static(KEYS, markup=False)

    def action_close(self) -> None:
        self.dismiss(None)
