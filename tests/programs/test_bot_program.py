"""e2e-directory and e2e-bot as programs: a directory key made and used, a certificate issued for the
bot's printed identity key, the parcel bot served by a real ``e2e-bot`` process against a real relay,
a customer whose client shows the name verified, and a clean stop on SIGTERM and on SIGINT."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from client import Client, Message
from client.business import VerifiedName, check_business_name, send_choice, structured_content
from client.directory import DirectoryKeyError, load_directory_key, load_directory_public_key
from client.structured import QuickReplies
from server import Relay, SQLiteStore
from tests.programs.helpers import program_environment
from tests.relay.conftest import TEST_LIMITS

EXAMPLES = Path(__file__).resolve().parents[2] / "client" / "examples"


def _run(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *argv],
        capture_output=True,
        text=True,
        env=program_environment(tmp_path),
        cwd=tmp_path,
        timeout=60,
    )


def test_directory_keygen_issue_and_show(tmp_path: Path) -> None:
    made = _run(tmp_path, "client.directory", "keygen", "--key", "dir.key")
    assert made.returncode == 0, made.stderr
    public = made.stdout.strip()
    assert (tmp_path / "dir.key.pub").read_text().strip() == public
    assert stat.S_IMODE((tmp_path / "dir.key").stat().st_mode) == 0o600
    assert load_directory_key(tmp_path / "dir.key").public_key == load_directory_public_key(public)
    # Never over an existing key.
    again = _run(tmp_path, "client.directory", "keygen", "--key", "dir.key")
    assert again.returncode == 2 and "never overwritten" in again.stderr

    identity = _run(
        tmp_path, "client.bot", "x.py", "--account", "parcels", "--data", "bot", "--print-identity"
    )
    assert identity.returncode == 0, identity.stderr
    key_hex = identity.stdout.strip()
    issued = _run(
        tmp_path,
        "client.directory",
        "issue",
        "--key",
        "dir.key",
        "--account",
        "parcels",
        "--identity-key",
        key_hex,
        "--name",
        "Parcel Depot",
        "--out",
        "parcels.cert",
    )
    assert issued.returncode == 0, issued.stderr
    shown = _run(tmp_path, "client.directory", "show", "parcels.cert", "--directory-key", "dir.key.pub")
    assert shown.returncode == 0, shown.stderr
    assert "display name: 'Parcel Depot'" in shown.stdout and "verifies now" in shown.stdout

    # Mistakes are one line and status 2: a look-alike name, a bad key, a malformed key file.
    for argv, expected in (
        (["--name", "P\u0430rcel Depot", "--identity-key", key_hex], "mixes scripts"),
        (["--name", "Parcel Depot", "--identity-key", "05" + "00" * 31], "identity-key"),
    ):
        bad = _run(
            tmp_path,
            "client.directory",
            "issue",
            "--key",
            "dir.key",
            "--account",
            "parcels",
            "--out",
            "x",
            *argv,
        )
        assert bad.returncode == 2 and expected in bad.stderr and "Traceback" not in bad.stderr
    (tmp_path / "broken.key").write_text(json.dumps({"format": "e2e-directory-key", "version": 7}))
    with pytest.raises(DirectoryKeyError, match="version 7"):
        load_directory_key(tmp_path / "broken.key")
    other = _run(tmp_path, "client.directory", "keygen", "--key", "other.key")
    forged = _run(
        tmp_path, "client.directory", "show", "parcels.cert", "--directory-key", other.stdout.strip()
    )
    assert forged.returncode == 2 and "CertificateSignatureError" in forged.stderr


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
async def test_e2e_bot_serves_the_parcel_bot_and_stops_cleanly(tmp_path: Path, stop_signal: int) -> None:
    relay = Relay(SQLiteStore(tmp_path / "relay.db"), TEST_LIMITS)
    await relay.start("127.0.0.1", 0)
    process: asyncio.subprocess.Process | None = None
    alice: Client | None = None
    try:
        assert _run(tmp_path, "client.directory", "keygen", "--key", "dir.key").returncode == 0
        common = ["--account", "parcels", "--data", str(tmp_path / "bot"), "--relay", relay.url]
        key_hex = _run(tmp_path, "client.bot", "x.py", *common, "--print-identity").stdout.strip()
        issued = _run(
            tmp_path,
            "client.directory",
            "issue",
            "--key",
            "dir.key",
            "--account",
            "parcels",
            "--identity-key",
            key_hex,
            "--name",
            "Parcel Depot",
            "--out",
            "parcels.cert",
        )
        assert issued.returncode == 0, issued.stderr
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "client.bot",
            str(EXAMPLES / "parcel_bot.py"),
            *common,
            "--certificate",
            str(tmp_path / "parcels.cert"),
            "--set",
            "step=0.3",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=program_environment(tmp_path),
            cwd=tmp_path,
        )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line.decode().strip() == "e2e-bot: parcels ready"

        alice = Client.create(tmp_path / "alice.db", relay.url, "alice")
        await alice.start()
        await alice.send("parcels", "PD123456")

        async def next_content() -> object:
            while True:
                event = await alice.receive(timeout=15)
                if isinstance(event, Message):
                    return structured_content(event)

        assert await next_content() == "Parcel PD123456 is at the sorting centre."
        offer = await next_content()
        assert isinstance(offer, QuickReplies)
        await send_choice(alice, "parcels", offer, 1)
        assert "moves" in str(await next_content())
        assert await next_content() == "Update: parcel PD123456 has left the depot."
        directory = load_directory_public_key(str(tmp_path / "dir.key.pub"))
        status = await check_business_name(alice, "parcels", directory)
        assert status == VerifiedName("parcels", "Parcel Depot", status.not_after)  # type: ignore[union-attr]

        process.send_signal(stop_signal)
        code = await asyncio.wait_for(process.wait(), 30)
        rest = (await process.stdout.read()).decode()
        assert code == 0 and "e2e-bot: parcels stopped" in rest
        process = None
        # Its state is on disk: Alice's subscription survived the stop.
        from client.bot import BotStore

        store = BotStore(tmp_path / "bot" / "bot.sqlite3")
        assert store.subscribers("parcel:PD123456") == ["alice"]
        store.close()
    finally:
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        if alice is not None:
            await alice.close()
        await relay.close()


def test_e2e_bot_refuses_a_module_without_setup(tmp_path: Path) -> None:
    (tmp_path / "empty.py").write_text("x = 1\n")
    result = _run(
        tmp_path, "client.bot", str(tmp_path / "empty.py"), "--account", "shop", "--data", str(tmp_path / "d")
    )
    assert result.returncode == 2 and "defines no setup(bot)" in result.stderr
    missing = _run(tmp_path, "client.bot", "nowhere.py", "--account", "shop", "--data", str(tmp_path / "d"))
    assert missing.returncode == 2 and "is not a file" in missing.stderr
    assert os.path.exists(tmp_path / "d" / "client.sqlite3") is False
