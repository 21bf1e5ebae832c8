"""One escaping function per medium porter prints paths and names to.

File, folder, tensor and layer names come from model folders porter did not write, and a tool's
message can quote them. Printed raw, a newline in a name forges whole lines of porter's output, an
ESC drives the terminal, a backtick breaks out of a Markdown code span and a control character
makes the JUnit XML ill-formed. So every such string goes through the function for its medium:

    console        stdout, stderr and the crash file (rich output: also rich.markup.escape, or a Text)
    markdown_code  a name in the --markdown summary (markdown: free text there)
    xml            --junit (ElementTree quotes & < > " itself)
    html           --html

JSON needs none: json.dumps writes every control character as an escape itself.
"""

from __future__ import annotations

import html as _html
import re

# C0 (newline and tab included), DEL, C1, lone surrogates (undecodable bytes of a file name, which
# would not even encode on the way out), line/paragraph separators and the bidi controls that
# reorder what a reader sees ("Trojan Source").
_CONTROL = "\x00-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_CONSOLE = re.compile(f"[{_CONTROL}]")
_XML = re.compile(f"[{_CONTROL}\ufffe\uffff]")  # XML 1.0 also excludes these two non-characters
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

# Markdown punctuation that can start emphasis, links, images, code, strike-through, math, headings,
# lists or (|) table cells; the HTML specials become entities, so no tag or code span can open.
_MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;", "`": "&#96;", "|": "&#124;"}
_MD_BACKSLASHED = set("\\*_{}[]()#+-!~$")


def _shown(match: re.Match) -> str:
    c = match.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def console(text) -> str:
    """``text`` with every control character shown as a backslash escape (\\n, \\x1b, \\u202e), so
    a name prints as one line and cannot drive the terminal; a backslash itself stays as it is."""
    return _CONSOLE.sub(_shown, str(text))


def markdown(text) -> str:
    """``text`` for Markdown (a CI step summary): control characters shown as in console(), HTML
    specials, backticks and pipes as entities, and the other Markdown punctuation backslashed, so it
    renders as the literal text and cannot open a tag, a code span, a link or a new table cell."""
    return "".join(_MD_ENTITIES.get(c) or ("\\" + c if c in _MD_BACKSLASHED else c) for c in console(text))


def markdown_code(text) -> str:
    """A name in Markdown, shown as code: an HTML <code> element around markdown(text), since a
    Markdown code span can be closed by a backtick inside the name."""
    return f"<code>{markdown(text)}</code>"


def xml(text) -> str:
    """``text`` for an XML 1.0 attribute or element: the characters XML 1.0 does not allow (and the
    controls console() shows) made visible, so ElementTree writes a well-formed file."""
    return _XML.sub(_shown, str(text))


def html(text) -> str:
    """``text`` for HTML: console()'s visible form, HTML-escaped (quotes too, for attributes)."""
    return _html.escape(console(text), quote=True)
