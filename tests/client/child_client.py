"""A client run as a child process by the crash tests; it kills itself with SIGKILL at a hook point.

    python child_client.py receive STORE URL N   # SIGKILL right after committing the N-th
                                                 # message, before acknowledging it to the relay
    python child_client.py receive-group STORE URL N  # the same for group pushes (the membership
                                                 # change, the sender key and group messages)
    python child_client.py send STORE URL TO N   # send messages 0, 1, ...; SIGKILL right after
                                                 # the N-th is committed to the outbox, before
                                                 # its frame is written

It prints one line per event it saw (``received <id>`` / ``sent <id>``; the receiver first prints
``ready`` once it is connected and has drained its queue), flushed at once, so the test knows what
happened before the kill.  SIGKILL gives the process no chance to clean up: no
close frame, no final commit, nothing buffered written.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable

from client_settings import TEST_SETTINGS

from client import Client, Hooks


def kill_at(number: int) -> Callable[..., None]:
    """A hook that kills this process with SIGKILL on its ``number``-th call."""
    calls = 0

    def hook(*_arguments: str) -> None:
        nonlocal calls
        calls += 1
        if calls == number:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


async def receive(store: str, url: str, number: int) -> None:
    async with Client.open(
        store, url, settings=TEST_SETTINGS, hooks=Hooks(after_receive_commit=kill_at(number))
    ) as client:
        await client.wait_connected(timeout=20)
        await client.wait_drained(timeout=20)
        print("ready", flush=True)
        async for message in client.messages():
            print("received", message.message_id, flush=True)


async def receive_group(store: str, url: str, number: int) -> None:
    from client.events import GroupMessage

    async with Client.open(
        store, url, settings=TEST_SETTINGS, hooks=Hooks(after_receive_commit=kill_at(number))
    ) as client:
        await client.wait_connected(timeout=20)
        async for event in client.events():
            if isinstance(event, GroupMessage):
                print("received", event.message_id, flush=True)


async def send(store: str, url: str, recipient: str, number: int) -> None:
    async with Client.open(
        store, url, settings=TEST_SETTINGS, hooks=Hooks(after_send_commit=kill_at(number))
    ) as client:
        await client.wait_connected(timeout=20)
        for count in range(number):
            message_id = await client.send(recipient, f"message {count}")
            print("sent", message_id, flush=True)
        await client.flush(timeout=20)


if __name__ == "__main__":
    mode, *arguments = sys.argv[1:]
    if mode == "receive":
        asyncio.run(receive(arguments[0], arguments[1], int(arguments[2])))
    elif mode == "receive-group":
        asyncio.run(receive_group(arguments[0], arguments[1], int(arguments[2])))
    else:
        asyncio.run(send(arguments[0], arguments[1], arguments[2], int(arguments[3])))
    sys.exit(3)  # Reaching here means the hook never fired.
