"""How the chat shows a stored message's body in a history, one-to-one or in a group.

The local histories keep the body, not its content type: text is shown as text, a quick-reply offer
or reply by its fallback text (:mod:`client.chat.business`), and an attachment pointer by the file it
names.  What comes out is still network text: callers pass it through :func:`client.inert.inert`.
"""

from __future__ import annotations

from client.chat.business import history_text
from client.pointer import InvalidPointerError, decode_pointer

__all__ = ["stored_text"]


def stored_text(body: bytes) -> str:
    """A stored message as history shows it: its text, or the file an attachment pointer names.

    The history does not record the content type; a pointer is recognised by decoding strictly
    (text is UTF-8, a pointer's key bytes almost never are).
    """
    structured = history_text(body)
    if structured is not None:
        return structured
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        pointer = decode_pointer(body)
    except InvalidPointerError:
        return body.decode("utf-8", errors="replace")
    return f"file {pointer.file_name or 'attachment'} ({pointer.size} bytes)"
