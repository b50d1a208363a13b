"""``python -m client.demo`` end to end: a real relay process, two real clients, the full script."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from client.demo import main as demo_main
from client.demo.layout import Columns
from client.demo.script import BACK_AND_FORTH, OFFLINE, REORDERED
from client.explain import SHOW_SECRETS_WARNING

from .helpers import processes_mentioning, program_environment

WIDTH = 120


def _columns(output: str) -> tuple[str, str, str]:
    """The text of each column, wrapped lines joined, whitespace collapsed."""
    splitter = Columns(lambda line: None, width=WIDTH)
    cells: list[list[str]] = [[], [], []]
    for line in output.splitlines():
        row = splitter.split(line)
        if row is not None:
            for column, cell in zip(cells, row, strict=True):
                column.append(cell)
    left, middle, right = (" ".join(" ".join(column).split()) for column in cells)
    return left, middle, right


def test_the_demo_runs_end_to_end_and_the_relay_sees_only_ciphertext(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "client.demo", "--explain", "--width", str(WIDTH)],
        capture_output=True,
        text=True,
        timeout=120,
        env=program_environment(tmp_path),
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout

    # It ends on its own with a summary naming the key agreement and the checks it made.
    summary = " ".join(output[output.index("── Summary") :].split())
    assert re.search(r"key agreement:\s+Signal's PQXDH with Kyber-1024", summary)
    assert "message version 4, then the Triple Ratchet (Double Ratchet + SPQR)" in summary
    spqr = re.search(
        r"SPQR: (\d+) epoch changes seen \(both sides reached epoch (\d+)\); (\d+) chunks sent", summary
    )
    assert spqr is not None and int(spqr[1]) >= 4 and int(spqr[2]) >= 3 and int(spqr[3]) > 100
    assert "NO plaintext in the relay's files" in summary
    assert "relay: stopped, exit status 0" in summary
    assert re.search(r"\b2 overtaken by later ones and still decrypted", summary)
    assert "2 skipped message keys stored, 2 used" in summary
    assert "one upload stored as 2 copies, one per member device" in summary
    assert "the removal rotated the sender key; the removed member read 0 later messages" in summary

    # Plaintext only at the two ends; the relay column shows ids, sizes and ciphertext.
    left, middle, right = _columns(output)
    texts = [*OFFLINE, *(text for _, text in BACK_AND_FORTH), *REORDERED]
    for text in texts:
        assert text in left, text
        assert text in right, text
        assert text not in middle, text
    assert re.search(r"#\d+ alice→bob PreKeySignalMessage [\d,]+ B", middle)
    assert re.search(r"#\d+ bob→alice SignalMessage [\d,]+ B", middle)
    # Version-4 messages: the version byte 0x44 opens every one of them.
    assert re.search(r"44 ([0-9a-f]{2} ){7}…", middle)
    assert not re.search(r"SignalMessage [\d,]+ B\s+id \S+ 33 ", middle)

    # The late message was decrypted with a stored skipped key.
    assert '"One (sent first)." (arrived 3rd)' in right
    assert '"Two (sent second)." (arrived 4th)' in right
    assert "late: stored key for #0 used" in right
    assert "late: stored key for #1 used" in right

    # Explain mode: both sides print the four DH results, and they agree.
    alice_dh = re.findall(r"\[Alice\] X3DH: (DH\d) = DH\([^)]*\) = (#[0-9a-f]{8})", output)
    bob_dh = re.findall(r"\[Bob\] X3DH: (DH\d) = DH\([^)]*\) = (#[0-9a-f]{8})", output)
    # (Alice's second handshake starts her session with Carol, for the group.)
    assert [name for name, _ in alice_dh][:4] == ["DH1", "DH2", "DH3", "DH4"]
    # (Bob's first handshake is with Alice; his second starts his session with Carol.)
    assert alice_dh[:4] == bob_dh[:4]
    # (Her third handshake starts her session with the parcel bot, step 12; her fourth is her
    # phone's session with her own linked laptop, step 13.)
    parcels_dh = re.findall(r"\[Parcels\] X3DH: (DH\d) = DH\([^)]*\) = (#[0-9a-f]{8})", output)
    assert alice_dh[8:12] == parcels_dh
    assert "MAC check passed" in output
    # Explain mode shows SPQR's steps: Kyber in PQXDH, chunks with SPQR's key mixed in, epochs.
    assert "[Alice] PQXDH: Kyber1024 encapsulation to Bob's Kyber prekey" in output
    assert "[Bob] PQXDH: Kyber1024 decapsulation with our Kyber prekey" in output
    assert re.search(r"\[Bob\] SPQR: chunk of field 5 .*SPQR's key mixed in", output)
    assert re.search(r"spqr_type=\w+, spqr_chunk=\d+", output)
    assert re.search(r"\[Alice\] SPQR: new epoch, .*from=1, to=2", output)
    assert re.search(r"\[Bob\] SPQR: new epoch, .*from=2,\s+to=3", output)

    # The picture: ciphertext and its size bucket in the middle, verified and opened on Bob's side,
    # forwarded to Carol without a new upload.
    assert "the forward reused the blob" in summary
    bucket = r"blob [A-Za-z0-9_-]{10}… [\d,]+ B \(size bucket: files of [\d,]+–[\d,]+ B look alike\)"
    assert re.search(bucket, middle)
    assert "no new upload" in middle
    assert "opened: PNG 160×120" in right
    assert "carol: ← sunrise.png verified, PNG 160×120" in right
    assert "SECRET" not in output

    # Step 11: the parcel bot answers Alice; only ciphertext and the served certificate in the middle.
    assert '→ "Where is my parcel PD123456?"' in left and "PD123456?" not in middle
    assert "sorting centre" in left and "sorting centre" not in middle
    assert re.search(r"#\d+ alice→parcels PreKeySignalMessage", middle)
    assert re.search(r'"Parcel Depot" for its identity key', middle)
    assert "(the relay cannot" in middle
    assert '✓ parcels is "Parcel Depot"' in left
    assert "1. Notify me of updates" in left
    assert re.search(r'later: "Update: parcel PD123456 has left the\s+depot\."', left)

    # The linked laptop: Bob's message on both of Alice's devices, the laptop's reply on her phone.
    assert left.count("Hello to both of your devices.") == 2
    assert "phone shows: you (device 2) → bob:" in left
    assert "Answered from my laptop." in right and "(from alice/2)" in right
    assert "Hello to both of your devices." not in middle and "Answered from my laptop." not in middle

    # Nothing is left running and the temporary directory is gone.
    assert processes_mentioning(str(tmp_path)) == []
    assert list(tmp_path.iterdir()) == []


def test_a_demo_that_fails_says_so_and_still_stops_its_relay(tmp_path: Path) -> None:
    # No step can finish in a microsecond: the demo must fail cleanly, not hang or leak the relay.
    result = subprocess.run(
        [sys.executable, "-m", "client.demo", "--timeout", "0.000001"],
        capture_output=True,
        text=True,
        timeout=120,
        env=program_environment(tmp_path),
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "demo failed:" in result.stderr
    assert "Summary" not in result.stdout
    assert processes_mentioning(str(tmp_path)) == []
    assert list(tmp_path.iterdir()) == []


def test_show_secrets_is_loud_and_shows_the_same_secrets_on_both_sides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    tempfile.tempdir = None
    try:
        assert demo_main(["--show-secrets", "--width", str(WIDTH)]) == 0
    finally:
        tempfile.tempdir = None
    output = capsys.readouterr().out
    # The warning opens and closes the output.
    assert output.lstrip().startswith(SHOW_SECRETS_WARNING)
    assert output.rstrip().endswith(SHOW_SECRETS_WARNING)
    alice = re.findall(r"\[Alice\] X3DH: (DH\d) = DH\([^)]*\) = SECRET ([0-9a-f]{64})", output)
    bob = re.findall(r"\[Bob\] X3DH: (DH\d) = DH\([^)]*\) = SECRET ([0-9a-f]{64})", output)
    # Alice's first handshake is with Bob; her second starts her session with Carol, for the group;
    # her third with the parcel bot; her fourth is her phone's session with her own linked laptop.
    assert len(alice) == 16
    assert alice[:4] == bob[:4]
    assert list(tmp_path.iterdir()) == []
