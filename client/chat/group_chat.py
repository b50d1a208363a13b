"""Groups in e2e-chat: ``/group`` and its subcommands, group messages and membership changes on screen.

What this module owns
---------------------
:class:`GroupChat`, the group half of :class:`client.chat.app.ChatApp`:

* ``/group new NAME a b …`` creates a group of you (its admin) and the people named, and switches
  to it; ``/group add a …``, ``/group remove a …`` and ``/group leave`` change the current group
  (signed by you; the relay and every member check the signature); ``/group NAME`` switches to a
  group (by its title, or the first hex digits of its id); ``/group members`` says who is in it and
  who the admins are; ``/group history [N]`` shows its last messages; ``/group list`` lists groups;
* while a group is current, what you type goes to the group (``/to NAME`` goes back to a person);
* group messages, membership changes and refusals (a change the relay forged or replayed, a message
  from a non-member) printed as they arrive.

Invariants
----------
Every name, title and text that came from the network is shown through :func:`shown`, which
replaces control and bidirectional-formatting characters, so a member cannot move the cursor,
clear the screen or disguise a line.

What it does not know
---------------------
The protocol: :mod:`client.groups` does the work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from client import transport
from client.chat.history import stored_text
from client.errors import ClosedError, IdentityChanged
from client.events import GroupMessage, GroupRefused, MembershipChanged
from client.groups import GroupError
from client.inert import inert
from e2e.errors import E2EError

__all__ = ["GroupChat", "shown"]

GROUP_USAGE = (
    "usage: /group new NAME a b … | /group add a … | /group remove a … | /group leave | "
    "/group members | /group history [N] | /group list | /group NAME"
)


def shown(text: str, limit: int = 4000) -> str:
    """``text`` safe for a terminal (:func:`client.inert.inert`), cut to ``limit`` characters."""
    return inert(text[:limit]) + ("…" if len(text) > limit else "")


def _clock(timestamp_ms: int) -> str:
    return time.strftime("%H:%M", time.localtime(timestamp_ms / 1000))


class GroupChat:
    """The group commands and events of the chat (mixed into :class:`client.chat.app.ChatApp`)."""

    client: Any
    write: Callable[[str], None]
    peer: str | None
    group: bytes | None = None

    def group_title(self, group_id: bytes) -> str:
        row = self.client._groups.group(group_id)
        return shown(row.title if row is not None else group_id.hex()[:8], 64)

    def _find_group(self, name: str) -> bytes | None:
        rows = self.client.groups()
        for row in rows:
            if row.title == name:
                return bytes(row.group_id)
        matches = [row for row in rows if row.group_id.hex().startswith(name.lower())]
        return bytes(matches[0].group_id) if len(matches) == 1 and len(name) >= 4 else None

    async def _cmd_group(self, rest: str) -> None:
        words = rest.split()
        sub, arguments = words[0].lower(), words[1:]
        try:
            if sub == "new" and len(arguments) >= 1:
                await self._group_new(arguments[0], arguments[1:])
            elif sub == "add" and arguments:
                await self.client.add_members(self._current(), arguments)
                self.write(f"adding {', '.join(arguments)} (signed by you)")
            elif sub == "remove" and arguments:
                await self.client.remove_members(self._current(), arguments)
                self.write(f"removing {', '.join(arguments)}: every remaining member makes a new sender key")
            elif sub == "leave" and not arguments:
                group = self._current()
                await self.client.leave(group)
                self.write(f"you left {self.group_title(group)}")
                self.group = None
            elif sub == "members" and not arguments:
                self._group_members(self._current())
            elif sub == "history" and len(arguments) <= 1:
                count = int(arguments[0]) if arguments and arguments[0].isdigit() else 20
                self._group_history(self._current(), count)
            elif sub == "list" and not arguments:
                self._group_list()
            elif not arguments:
                group = self._find_group(words[0])
                if group is None:
                    self.write(f"no group {shown(words[0], 64)} (/group list)")
                    return
                self.group = group
                self.write(
                    f"talking to the group {self.group_title(group)} (/group members; /to NAME for a person)"
                )
            else:
                self.write(GROUP_USAGE)
        except GroupError as error:
            self.write(f"!! {error}")
        except IdentityChanged as error:
            self.write(
                f"!! {error.name}'s identity key changed: /verify {error.name}, then /accept {error.name}"
            )
        except (transport.RelayError, E2EError, ClosedError, TimeoutError, OSError) as error:
            self.write(f"!! not done: {error}")

    def _current(self) -> bytes:
        if self.group is None:
            raise GroupError("no current group: /group NAME or /group new NAME a b")
        return self.group

    async def _group_new(self, title: str, members: list[str]) -> None:
        if self._find_group(title) is not None:
            self.write(f"!! you have a group called {shown(title, 64)} already")
            return
        group = await self.client.create_group(title, members)
        self.group = group
        self.write(
            f"created the group {shown(title, 64)} with {', '.join(members) or 'nobody else yet'}; "
            "what you type now goes to the group"
        )

    def _group_members(self, group: bytes) -> None:
        members = self.client.group_members(group)
        self.write(f"{self.group_title(group)}: {len(members)} members")
        for member in members:
            role = "admin" if member.admin else "member"
            self.write(f"  {shown(member.name, 64)}  {role}  key {member.identity_key.fingerprint(8)}")

    def _group_history(self, group: bytes, count: int) -> None:
        entries = self.client.group_history(group, limit=count)
        if not entries:
            self.write(f"no messages in {self.group_title(group)} yet")
        for entry in entries:
            who = "you" if entry.direction == "out" else shown(entry.sender, 64)
            text = shown(stored_text(entry.body))
            self.write(f"[{_clock(entry.timestamp)}] {self.group_title(group)} · {who}: {text}")

    def _group_list(self) -> None:
        rows = self.client.groups()
        if not rows:
            self.write("no groups yet (/group new NAME a b)")
        for row in rows:
            state = "" if row.active else "  (you are no longer in it)"
            marker = "*" if row.group_id == self.group else " "
            self.write(
                f"{marker} {shown(row.title, 64)}  id {row.group_id.hex()[:8]}  epoch {row.epoch}{state}"
            )

    async def say_group(self, text: str) -> None:
        group = self._current()
        try:
            await self.client.send_group(group, text)
        except (GroupError, transport.RelayError, E2EError, ClosedError, OSError) as error:
            self.write(f"!! not sent: {error}")
            return
        self.write(f"[{_clock(int(time.time() * 1000))}] {self.group_title(group)} · you: {shown(text)}")

    def show_group_event(self, event: object) -> bool:
        """Print a group event; False when ``event`` is not one."""
        if isinstance(event, GroupMessage):
            title, sender = self.group_title(event.group_id), shown(event.sender, 64)
            self.write(f"[{_clock(event.timestamp)}] {title} · {sender}: {shown(event.text)}")
        elif isinstance(event, MembershipChanged):
            title = self.group_title(event.group_id)
            by = shown(event.by, 64) if event.by else "an admin"
            if event.we_left:
                self.write(f"-- you are no longer in {title}")
                if self.group == event.group_id:
                    self.group = None
                return True
            parts = []
            if event.epoch == 0:
                parts.append(f"{by} created the group")
            elif self.client.name in event.added:
                parts.append(f"{by} added you")
            elif event.added:
                parts.append(f"{by} added {', '.join(shown(n, 64) for n in event.added)}")
            if event.removed:
                parts.append(f"{', '.join(shown(n, 64) for n in event.removed)} left or were removed")
            summary = "; ".join(parts) or "membership changed"
            members = ", ".join(shown(name, 64) for name in event.members)
            self.write(f"-- {title} (epoch {event.epoch}): {summary}; members: {members}")
            if self.group is None and self.peer is None:
                self.group = event.group_id
            if (
                self.client.name in event.added
                and self.group_title(event.group_id) == event.group_id.hex()[:8]
            ):
                self.write("   (its name arrives with the first sender key; /group list shows it)")
        elif isinstance(event, GroupRefused):
            title, sender = self.group_title(event.group_id), shown(event.sender, 64)
            self.write(f"!! refused a {event.what} in {title} from {sender}: {shown(event.error, 200)}")
        else:
            return False
        return True
