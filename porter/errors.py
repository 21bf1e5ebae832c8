"""The exceptions porter raises at its boundary.

The CLI turns a PorterError into one readable message and exit code 2;
VerificationFailed is never raised by the converters (a failed check is a
result, written and reported), only by ``porter.testing`` helpers.
"""

from __future__ import annotations

from porter.checks import escape


class PorterError(Exception):
    """Bad input or usage. The message names the file, key or op at fault."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None, problems: list[str] | None = None):
        self.message = message
        self.hint = hint
        self.problems = list(problems or [])
        super().__init__(self.render())

    def render(self) -> str:
        """The message, one line per problem, and the hint: each part escaped on its own (it can quote a
        name from a model folder), so only these joins start a new line on the console."""
        lines = [escape.console(self.message)]
        lines += [f"  - {escape.console(p)}" for p in self.problems]
        if self.hint:
            lines.append(f"hint: {escape.console(self.hint)}")
        return "\n".join(lines)


class MappingError(PorterError):
    """A weight-mapping plan that does not fit: every problem is listed at once."""


class UnsupportedModelError(PorterError):
    """A model, op or attribute porter cannot convert (yet)."""


class CannotConvertYet(UnsupportedModelError):
    """porter, or a tool it drives (torch.onnx, torch.export, tf2onnx, TF), cannot take a valid model yet: not bad
    input, so the message says so. ``message`` stays the tool's own account (for notes);
    ``tool_output`` is what the tool printed, kept in a file only when the error reaches the CLI."""

    def __init__(self, message: str, *, tool_output: str = "", **kwargs):
        self.tool_output = tool_output
        super().__init__(message, **kwargs)

    def render(self) -> str:
        return "porter cannot convert this model yet: " + super().render()


def as_fields(error: PorterError) -> dict:
    """``error`` as plain JSON fields, for a child process to hand back (from_fields rebuilds it)."""
    fields = {"type": type(error).__name__, "message": error.message, "hint": error.hint, "problems": error.problems}
    if isinstance(error, CannotConvertYet):
        fields["tool_output"] = error.tool_output
    return fields


def from_fields(fields: dict) -> PorterError:
    """The PorterError as_fields wrote: its class where porter.errors has it, else a plain PorterError."""
    fields = dict(fields)
    cls = globals().get(fields.pop("type"), PorterError)
    cls = cls if isinstance(cls, type) and issubclass(cls, PorterError) else PorterError
    if not issubclass(cls, CannotConvertYet):
        fields.pop("tool_output", None)
    return cls(fields.pop("message"), **fields)


class VerificationFailed(AssertionError):
    """Raised by porter.testing.assert_equivalent; carries the rendered table."""

    def __init__(self, result, text: str):
        self.result = result
        super().__init__(text)
