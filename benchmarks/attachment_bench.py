"""Attachment benchmark: encrypt+upload and download+verify against the crypto floor and a file copy.

Run ``make bench-attachments`` (or ``python benchmarks/attachment_bench.py --sizes 1M,256M``).  One
run prints one table.

What each row measures (MB/s of plaintext, 1 MB = 10^6 bytes)
--------------------------------------------------------------
* **copy**: ``shutil.copyfile`` of the plaintext file: the disk's own speed on this machine.
* **floor, sender**: AES-256-CBC + HMAC-SHA256 + SHA-256 over the same bytes in 256 KiB chunks,
  calling ``cryptography`` and ``hashlib`` directly, reading the file and writing nothing: the least
  any sender with these primitives must spend.
* **floor, receiver**: HMAC-SHA256 + SHA-256 over the ciphertext, then AES-256-CBC decryption,
  reading it twice (the receiver's two passes), writing nothing.
* **encrypt+upload**: ``client.attachments.upload_file`` to a real ``e2e-blobs`` process on
  loopback (filesystem store, fsync on completion): the whole sender path.
* **download+verify**: ``client.attachments.download_file`` from that service: download to the
  partial file, the verifying pass, the decrypting pass into a temporary file, fsync, link.

Peak memory: each sender and receiver run happens in a fresh child process, which reports its
peak resident set (``VmHWM``) and its resident set after imports; the blob service's peak is read
from its ``/proc`` entry after the run.  The target is memory bounded by the chunk size, not the
file size.  All processes share the machine's cores; compare rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHUNK = 256 * 1024
KEY = bytes(range(32))


def _size(text: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    text = text.strip().upper()
    if text[-1] in units:
        return int(text[:-1]) * units[text[-1]]
    return int(text)


def _status(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _floor_sender(path: Path) -> float:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    started = time.perf_counter()
    encryptor = Cipher(algorithms.AES(bytes(32)), modes.CBC(bytes(16))).encryptor()
    mac = hmac.new(bytes(32), digestmod=hashlib.sha256)
    sha = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            out = encryptor.update(chunk)
            mac.update(out)
            sha.update(out)
    return time.perf_counter() - started


def _floor_receiver(path: Path) -> float:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    started = time.perf_counter()
    mac = hmac.new(bytes(32), digestmod=hashlib.sha256)
    sha = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            mac.update(chunk)
            sha.update(chunk)
    decryptor = Cipher(algorithms.AES(bytes(32)), modes.CBC(bytes(16))).decryptor()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            decryptor.update(chunk[: len(chunk) - len(chunk) % 16])
    return time.perf_counter() - started


def _child(arguments: argparse.Namespace) -> None:
    """One sender or receiver run in this fresh process; prints a JSON line."""
    from client.attachments import download_file, upload_file
    from client.blobs import BlobClient
    from client.pointer import AttachmentPointer
    from e2e.attachment import AttachmentKey
    from server.blob_tokens import BlobTokens

    baseline = _status("self", "VmRSS")

    async def run() -> dict[str, object]:
        blobs = BlobClient()
        try:
            started = time.perf_counter()
            if arguments.child == "upload":
                token = BlobTokens(KEY).issue("bench", 1)[0]
                pointer = await upload_file(blobs, arguments.url, token, Path(arguments.file), os.urandom)
                seconds = time.perf_counter() - started
                return {
                    "seconds": seconds,
                    "pointer": {
                        "key": pointer.key.key.hex(),
                        "digest": pointer.digest.hex(),
                        "size": pointer.size,
                        "blob_id": pointer.blob_id,
                        "upload_time": pointer.upload_time,
                    },
                }
            fields = json.loads(arguments.pointer)
            pointer = AttachmentPointer(
                AttachmentKey(bytes.fromhex(fields["key"])),
                bytes.fromhex(fields["digest"]),
                fields["size"],
                "application/octet-stream",
                "received.bin",
                fields["blob_id"],
                fields["upload_time"],
            )
            saved = await download_file(blobs, arguments.url, pointer, Path(arguments.file))
            seconds = time.perf_counter() - started
            saved.unlink()
            return {"seconds": seconds}
        finally:
            await blobs.close()

    result = asyncio.run(run())
    result.update(peak=_status("self", "VmHWM"), baseline=baseline)
    print(json.dumps(result))


def _run_child(*arguments: str) -> dict[str, object]:
    output = subprocess.run(
        [sys.executable, __file__, *arguments], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_service(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    key_file = directory / "token.key"
    key_file.write_bytes(KEY)
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "server.blob_cli", "--dir", str(directory / "store"), "--port", str(port),
            "--token-key", str(key_file), "--log-level", "WARNING",
            "--upload-rate", "1000", "--request-rate", "1000", "--device-quota-bytes", str(1 << 40),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process, f"http://127.0.0.1:{port}"
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("the blob service did not start")


def _mbps(size: int, seconds: float) -> str:
    return f"{size / seconds / 1e6:8.1f}"


def _mib(value: object) -> str:
    return f"{int(str(value)) / 2**20:7.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1M,256M", help="plaintext sizes (default: %(default)s)")
    parser.add_argument("--child", choices=["upload", "download"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--pointer", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        _child(arguments)
        return
    sizes = [_size(s) for s in arguments.sizes.split(",")]
    print(f"attachment benchmark: python {sys.version.split()[0]}, {os.cpu_count()} cores, chunk {CHUNK} B")
    header = f"{'size':>10} {'row':<18} {'MB/s':>8} {'peak RSS MiB':>13} {'RSS after imports':>18}"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="attachment-bench-") as temporary:
        directory = Path(temporary)
        service, url = _start_service(directory)
        try:
            for size in sizes:
                source = directory / "plain.bin"
                with open(source, "wb") as file:
                    remaining = size
                    while remaining:
                        piece = os.urandom(min(remaining, 1 << 20))
                        file.write(piece)
                        remaining -= len(piece)
                label = f"{size / 2**20:g} MiB" if size >= 2**20 else f"{size / 1024:g} KiB"
                started = time.perf_counter()
                shutil.copyfile(source, directory / "copy.bin")
                print(f"{label:>10} {'copy':<18} {_mbps(size, time.perf_counter() - started)}")
                (directory / "copy.bin").unlink()
                print(f"{label:>10} {'floor, sender':<18} {_mbps(size, _floor_sender(source))}")
                upload = _run_child("--child", "upload", "--url", url, "--file", str(source))
                print(
                    f"{label:>10} {'encrypt+upload':<18} {_mbps(size, float(str(upload['seconds'])))}"
                    f" {_mib(upload['peak']):>13} {_mib(upload['baseline']):>18}"
                )
                blob = next(p for p in (directory / "store" / "blobs").iterdir() if p.suffix != ".json")
                print(f"{label:>10} {'floor, receiver':<18} {_mbps(size, _floor_receiver(blob))}")
                folder = directory / "received"
                download = _run_child(
                    "--child", "download", "--url", url, "--file", str(folder),
                    "--pointer", json.dumps(upload["pointer"]),
                )  # fmt: skip
                print(
                    f"{label:>10} {'download+verify':<18} {_mbps(size, float(str(download['seconds'])))}"
                    f" {_mib(download['peak']):>13} {_mib(download['baseline']):>18}"
                )
                for path in (directory / "store" / "blobs").iterdir():
                    path.unlink()
                source.unlink()
            print(f"blob service peak RSS: {_mib(_status(service.pid, 'VmHWM')).strip()} MiB")
        finally:
            service.terminate()
            service.wait(timeout=10)


if __name__ == "__main__":
    main()
