"""A client run as a child process by the crash tests; it kills itself with SIGKILL at a hook point.

    python child_client.py receive STORE URL N   # SIGKILL right after committing the N-th
                                                 # message, before acknowledging it to the relay
    python child_client.py send STORE URL TO N   # send messages 0, 1, ...; SIGKILL right after
                                                 # the N-th is committed to the outbox, before
                                                 # its frame is written

It prints one line per event it saw (``received <id>`` / ``sent <id>``), flushed at once, so the
test knows what happened before the kill.  SIGKILL gives the process no chance to clean up: no
close frame, no final commit, nothing buffered written.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from client import Client, Hooks, Settings

SETTINGS = Settings(pre_key_target=12, pre_key_low_water=4, backoff_base=0.02, backoff_cap=0.5)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def receive(store: str, url: str, kill_at: int) -> None:
    committed = 0

    def after_receive_commit(sender: str, message_id: str) -> None:
        nonlocal committed
        committed += 1
        if committed == kill_at:
            die()

    async with Client.open(
        store, url, settings=SETTINGS, hooks=Hooks(after_receive_commit=after_receive_commit)
    ) as client:
        async for message in client.messages():
            print("received", message.message_id, flush=True)


async def send(store: str, url: str, recipient: str, kill_at: int) -> None:
    committed = 0

    def after_send_commit(message_id: str) -> None:
        nonlocal committed
        committed += 1
        if committed == kill_at:
            die()

    async with Client.open(
        store, url, settings=SETTINGS, hooks=Hooks(after_send_commit=after_send_commit)
    ) as client:
        await client.wait_connected(timeout=20)
        for number in range(kill_at):
            message_id = await client.send(recipient, f"message {number}")
            print("sent", message_id, flush=True)
        await client.flush(timeout=20)


if __name__ == "__main__":
    mode, *arguments = sys.argv[1:]
    if mode == "receive":
        asyncio.run(receive(arguments[0], arguments[1], int(arguments[2])))
    else:
        asyncio.run(send(arguments[0], arguments[1], arguments[2], int(arguments[3])))
    sys.exit(3)  # Reaching here means the hook never fired.
