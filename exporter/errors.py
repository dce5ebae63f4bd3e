"""The one exception type for user-facing failures; cli.py prints it as one line (+ hint)."""


class ExportError(Exception):
    """A problem the user can fix: bad file, unsupported op, bad argument."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InternalError(Exception):
    """A bug of ours, found where it shows (the generated C++ does not compile): printed by
    cli.py as one line prefixed "internal error:" (+ hint), exit 3."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message
