"""The real cause of a failure inside a tool porter drives (torch.onnx, torch.export, tf2onnx, Keras),
in one line plus a little context, for a PorterError.

The tools wrap the error that matters: torch.onnx's ConversionError says "Refer to the full
stack trace above" and keeps the ValueError as its __cause__; Keras puts the TF error between
"Exception encountered when calling layer ..." and a list of the call's arguments (tensor values
included, which is how a fragment of a number array once became porter's message).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TF_NODE = re.compile(r"^\{\{function_node [^}]*\}\}\s*")
# lines that are never the cause: data dumps, argument lists, the tools' own boilerplate
_NOISE = re.compile(
    r"^([\s\d.,+\-e\[\]()]+|[•*-] .*|\.\.\.|Exception encountered when calling.*|Call arguments received.*"
    r"|Arguments received.*|Refer to the full stack trace.*|\(Refer to the full stack trace.*|Traceback.*"
    r"|Use tlparse.*|Original traceback:|Next steps:?)$"
)
_WRAPPER_TYPES = ("ConversionError", "TorchExportError", "OnnxExporterError", "InternalError")


@dataclass
class RootCause:
    type: str
    headline: str
    context: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"{self.type}: {self.headline}" if self.headline else self.type


def chain(exc: BaseException) -> list[BaseException]:
    """exc and the exceptions behind it (explicit __cause__ first, else the implicit __context__)."""
    out, seen = [], set()
    while exc is not None and id(exc) not in seen:
        out.append(exc)
        seen.add(id(exc))
        exc = exc.__cause__ if exc.__cause__ is not None else (None if exc.__suppress_context__ else exc.__context__)
    return out


def root_cause(exc: BaseException) -> RootCause:
    """The deepest exception that is not a tool's wrapper, with its telling line and context."""
    links = chain(exc)
    candidates = [e for e in links if type(e).__name__ not in _WRAPPER_TYPES and _headline(str(e))] or links
    root = candidates[-1]
    text = _ANSI.sub("", str(root))
    context = _context(text)
    for wrapper in links:  # torch.onnx names the step that failed (e.g. "Failed to decompose the FX graph")
        first = _ANSI.sub("", str(wrapper)).strip().splitlines()[:1]
        if wrapper is not root and first and "step" in first[0] and "ONNX" in first[0]:
            context.insert(0, first[0].split(". ")[0])
            break
    return RootCause(type(root).__name__, _headline(text), context)


def _headline(text: str) -> str:
    text = _ANSI.sub("", text)
    summary = text.split("## Exception summary", 1)
    if len(summary) == 2:  # torch.onnx's report: "<class 'ValueError'>: the message"
        text = re.sub(r"^\s*<class '[\w.]+'>:\s*", "", summary[1].strip())
    for line in text.splitlines():
        line = _TF_NODE.sub("", line.strip())
        if line and not _NOISE.match(line):
            return line[:400]
    return ""


def _context(text: str) -> list[str]:
    """Where it happened: the FX node being executed, the model's own source line, the Keras layer."""
    lines = [line.rstrip() for line in text.splitlines()]
    out = []
    for line in lines:
        node = re.match(r"While executing (%\S+) .*target=([\w.]+)", line)
        if node:
            out.append(f"while executing {node.group(1)} ({node.group(2).removeprefix('torch.ops.')})")
        match = re.match(r"Exception encountered when calling layer ['\"]([^'\"]+)['\"]", line.strip())
        if match:
            out.append(f"in layer {match.group(1)!r}")
    if "Original traceback:" in text:  # the last frame is the model's own line that failed
        frames = [i for i, line in enumerate(lines) if line.strip().startswith("File ")]
        if frames:
            i = frames[-1]
            where = re.sub(r'^File "(?:.*/site-packages/)?([^"]+)", line (\d+), in (\w+)', r"\1:\2 (\3)", lines[i].strip())
            code = lines[i + 1].strip() if i + 1 < len(lines) else ""
            out.append(f"at {where}: {code}" if code else f"at {where}")
    return out
