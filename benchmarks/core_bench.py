"""Protocol-core benchmark: this project side by side with other implementations.

Run ``make bench`` (or ``python benchmarks/core_bench.py``).  One run prints one table:

* rows: session setups per second (X3DH, and PQXDH where a peer has it), 64-byte one-way burst
  (messages/s), 64-byte ping-pong (messages/s, a DH ratchet step per message), 64 KiB messages
  (MB/s, 1 MB = 10**6 bytes), a 64-byte message to a group of 10 and of 100 members as the
  sender's CPU sees it, with Sender Keys (one encryption and one signature) and by pairwise
  fan-out (one Double Ratchet encryption per member), the version-4 rows (Signal's PQXDH with
  Kyber1024 and the Triple Ratchet with SPQR, as libsignal speaks it: setups, 64 B burst, 64 B
  ping-pong, 64 KiB, each v4 rate as a percentage of the same run's v3 rate, and the bytes SPQR
  adds per message), then the floor rows, the bare primitives everything is built from;
* columns: the peers of :mod:`core_peers` (this project, python-axolotl, Syndace's libraries in
  two configurations, vodozemac, and for the group rows libsignal itself in the interop tests'
  Node peer, whose CPU time is the Node process's).

Each peer runs in its own subprocess (``--peer NAME``), so that one peer's imports, caches and
garbage cannot slow another down, and so that a peer that fails to import or crashes shows up
as ``n/a (reason)`` in its column instead of ending the run.

Each figure is the best of several timed rounds of CPU time, each long enough
(``--round-seconds``) for the timer to be irrelevant; the number of operations per round is
calibrated first.  The peers are measured in turn, and the whole turn is repeated
(``--passes``), keeping each figure's best, so that a burst of other load on the machine does not
land on one column only.  Compare columns of one run, not runs of different days.

``--profile`` runs this project's peer under cProfile instead and prints where the time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import platform
import pstats
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from core_peers import PEERS, PLAINTEXT_64, Batch, Peer

LARGE = 64 * 1024
# Messages of the ping-pong whose field 5 sizes the SPQR row averages: several epochs (~87 each).
SPQR_BYTES_MESSAGES = 400

# (key, label, unit) of every row, in table order.
PROTOCOL_ROWS = [
    ("setup", "session setups/s", "1/s"),
    ("setup_pqxdh", "PQXDH session setups/s", "1/s"),
    ("burst_64", "64 B burst, msg/s", "1/s"),
    ("burst_64_stored", "64 B burst, sessions stored and reloaded per message, msg/s", "1/s"),
    ("ping_pong_64", "64 B ping-pong, msg/s", "1/s"),
    ("burst_64k", "64 KiB messages, MB/s", "MB/s"),
    ("setup_v4", "v4 session setups/s (Signal's PQXDH with Kyber1024, then SPQR)", "1/s"),
    ("burst_64_v4", "v4 + SPQR: 64 B burst, msg/s", "1/s"),
    ("ping_pong_64_v4", "v4 + SPQR: 64 B ping-pong, msg/s", "1/s"),
    ("burst_64k_v4", "v4 + SPQR: 64 KiB messages, MB/s", "MB/s"),
    ("v4_burst_share", "v4 burst as % of v3 burst (same run; target ≥ 50 %)", "%"),
    ("v4_ping_pong_share", "v4 ping-pong as % of v3 ping-pong (same run; target ≥ 50 %)", "%"),
    ("spqr_bytes", "v4: bytes SPQR adds per message (field 5, 400-message ping-pong average)", "B"),
    ("group_send_10", "64 B to a 10-member group, sender CPU, Sender Keys, sends/s", "1/s"),
    ("fanout_10", "64 B to a 10-member group, sender CPU, pairwise fan-out, sends/s", "1/s"),
    ("group_send_100", "64 B to a 100-member group, sender CPU, Sender Keys, sends/s", "1/s"),
    ("fanout_100", "64 B to a 100-member group, sender CPU, pairwise fan-out, sends/s", "1/s"),
    (
        "group_send_stored",
        "64 B group message, Sender Keys, record stored and reloaded per send, sends/s",
        "1/s",
    ),
]
# The group sizes of the group rows.
GROUP_SIZES = (10, 100)
FLOOR_ROWS = [
    ("dh", "floor: X25519 DH/s", "1/s"),
    ("keygen", "floor: key pair generations/s", "1/s"),
    ("sign", "floor: XEdDSA signatures/s", "1/s"),
    ("verify", "floor: XEdDSA verifications/s", "1/s"),
    ("message_crypto_64", "floor: 64 B message crypto, msg/s", "1/s"),
    ("message_crypto_64k", "floor: 64 KiB message crypto, MB/s", "MB/s"),
]
# Columns in table order; the floor rows of this project come from a peer of their own.
COLUMNS = ["ours", "axolotl", "syndace", "oldmemo", "vodozemac", "libsignal"]
FLOOR_PEER = {"ours": "ours-primitives"}


def measure(
    batch: Batch,
    round_seconds: float,
    rounds: int,
    units_per_operation: float = 1.0,
    clock: Callable[[], float] = time.process_time,
) -> float:
    """Operations (times ``units_per_operation``) per CPU second: the best of ``rounds`` timed rounds.

    Time is this process's CPU time (:func:`time.process_time`), so that the moments the
    operating system gives the CPU to other work on a shared machine are not counted; everything
    measured is single-threaded.  The best round is the one the rest of the machine disturbed
    least (caches, memory bandwidth), as :mod:`timeit` advises.  A peer that runs in another
    process (libsignal in Node) passes that process's CPU clock as ``clock``.
    """
    n = 1
    while True:
        start = clock()
        batch(n)
        elapsed = clock() - start
        if elapsed >= round_seconds / 8:
            break
        n *= 4 if elapsed < round_seconds / 64 else 2
    n = max(1, round(n * round_seconds / elapsed))
    rates = []
    for _ in range(rounds):
        gc.collect()
        start = clock()
        batch(n)
        rates.append(n / (clock() - start))
    return max(rates) * units_per_operation


def _reason(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".splitlines()[0]
    return text[:90]


def run_peer(name: str, round_seconds: float, rounds: int) -> dict[str, float | str]:
    """Every row one peer can fill, measured in this process; a failing row holds its reason."""
    results: dict[str, float | str] = {}
    try:
        peer: Peer = PEERS[name]()
    except Exception as error:
        return {"error": _reason(error)}

    def attempt(key: str, make: Callable[[], float]) -> None:
        try:
            results[key] = make()
        except NotImplementedError:
            pass
        except Exception as error:
            results[key] = "n/a (" + _reason(error) + ")"

    megabytes = LARGE / 1e6
    if type(peer).setups is not Peer.setups:
        attempt("setup", lambda: measure(peer.setups, round_seconds, rounds))
        if type(peer).pqxdh_setups is not Peer.pqxdh_setups:
            attempt("setup_pqxdh", lambda: measure(peer.pqxdh_setups, round_seconds, rounds))
        try:
            peer.start()
        except Exception as error:
            results["burst_64"] = "n/a (" + _reason(error) + ")"
        else:
            attempt("burst_64", lambda: measure(lambda n: peer.burst(n, PLAINTEXT_64), round_seconds, rounds))
            attempt(
                "ping_pong_64",
                lambda: measure(lambda n: peer.ping_pong(n, PLAINTEXT_64), round_seconds, rounds),
            )
            attempt(
                "burst_64_stored",
                lambda: measure(lambda n: peer.burst_stored(n, PLAINTEXT_64), round_seconds, rounds),
            )
            payload = os.urandom(LARGE)
            attempt(
                "burst_64k",
                lambda: measure(lambda n: peer.burst(n, payload), round_seconds, rounds, megabytes),
            )
    if type(peer).v4_setups is not Peer.v4_setups:
        attempt("setup_v4", lambda: measure(peer.v4_setups, round_seconds, rounds))
        try:
            peer.start_v4()
        except Exception as error:
            results["burst_64_v4"] = "n/a (" + _reason(error) + ")"
        else:
            attempt(
                "burst_64_v4",
                lambda: measure(lambda n: peer.burst_v4(n, PLAINTEXT_64), round_seconds, rounds),
            )
            attempt(
                "ping_pong_64_v4",
                lambda: measure(lambda n: peer.ping_pong_v4(n, PLAINTEXT_64), round_seconds, rounds),
            )
            large = os.urandom(LARGE)
            attempt(
                "burst_64k_v4",
                lambda: measure(lambda n: peer.burst_v4(n, large), round_seconds, rounds, megabytes),
            )
        attempt("spqr_bytes", lambda: peer.spqr_bytes(SPQR_BYTES_MESSAGES))
    for members in GROUP_SIZES:

        def group_rate(members: int = members) -> float:
            peer.start_group(members)
            return measure(
                lambda n: peer.group_send(n, PLAINTEXT_64), round_seconds, rounds, clock=peer.cpu_clock
            )

        def fanout_rate(members: int = members) -> float:
            peer.start_fanout(members)
            return measure(lambda n: peer.fanout(n, PLAINTEXT_64), round_seconds, rounds)

        attempt(f"group_send_{members}", group_rate)
        attempt(f"fanout_{members}", fanout_rate)
    attempt(
        "group_send_stored",
        lambda: measure(
            lambda n: peer.group_send_stored(n, PLAINTEXT_64), round_seconds, rounds, clock=peer.cpu_clock
        ),
    )
    try:
        primitives = peer.primitives()
    except Exception as error:
        results["dh"] = "n/a (" + _reason(error) + ")"
        primitives = {}
    for key, batch in primitives.items():
        units = megabytes if key.endswith("64k") else 1.0
        attempt(key, lambda batch=batch, units=units: measure(batch, round_seconds, rounds, units))  # type: ignore[misc]
    return results


def with_shares(results: dict[str, float | str]) -> dict[str, float | str]:
    """Add the v4-against-v3 rows (percent) where both figures of a pair were measured."""
    shares = {
        "v4_burst_share": ("burst_64_v4", "burst_64"),
        "v4_ping_pong_share": ("ping_pong_64_v4", "ping_pong_64"),
    }
    out = dict(results)
    for key, (v4, v3) in shares.items():
        ours, theirs = results.get(v4), results.get(v3)
        if isinstance(ours, float) and isinstance(theirs, float) and theirs > 0:
            out[key] = ours / theirs * 100
    return out


def run_in_subprocess(name: str, round_seconds: float, rounds: int, timeout: float) -> dict[str, float | str]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--peer",
        name,
        "--round-seconds",
        str(round_seconds),
        "--rounds",
        str(rounds),
    ]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if completed.returncode != 0:
        lines = [line for line in completed.stderr.strip().splitlines() if line.strip()]
        return {"error": (lines[-1] if lines else f"exit status {completed.returncode}")[:90]}
    result: dict[str, float | str] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def _best(earlier: dict[str, float | str] | None, later: dict[str, float | str]) -> dict[str, float | str]:
    """Merge two passes of one peer: the higher figure of each row; a failure only where both failed."""
    if earlier is None:
        return later
    merged = dict(earlier)
    for key, value in later.items():
        previous = merged.get(key)
        better = isinstance(value, float) and (not isinstance(previous, float) or value > previous)
        if better or previous is None:
            merged[key] = value
    if "error" in merged and any(isinstance(value, float) for value in merged.values()):
        del merged["error"]
    return merged


def _format(value: float | str | None, column_error: str | None) -> str:
    if column_error is not None:
        return f"n/a ({column_error})"
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.1f}"


# What each protocol row costs at least, in operations of this project's primitive layer: the
# work libsignal's protocol cannot skip, with everything else (encoding, state, checks) taken away.
# setup: 5 identity/prekey/base key pairs and Alice's ratchet key pair, 10 X25519 (4 + 4 for X3DH
#   on both sides, 1 for Alice's first sending chain, 1 for the receiving half of Bob's first DH
#   ratchet step: its sending half, with Bob's new ratchet key pair, waits for his first reply),
#   one signature, one verification, the first message's crypto;
# ping-pong: per message a new ratchet key pair, 2 X25519 and the message crypto (the two
#   root-key HKDFs, a few microseconds, are left out).
FLOOR_RECIPES: dict[str, dict[str, float]] = {
    "setup": {"keygen": 6, "dh": 10, "sign": 1, "verify": 1, "message_crypto_64": 1},
    "burst_64": {"message_crypto_64": 1},
    "ping_pong_64": {"keygen": 1, "dh": 2, "message_crypto_64": 1},
    "burst_64k": {"message_crypto_64k": 1},
}


def primitive_floor(key: str, primitives: dict[str, float | str]) -> float | None:
    """The rate a protocol row could reach if only its primitive operations cost time."""
    recipe = FLOOR_RECIPES.get(key)
    if recipe is None:
        return None
    seconds = 0.0
    for operation, count in recipe.items():
        rate = primitives.get(operation)
        if not isinstance(rate, float):
            return None
        seconds += count / rate
    return 1 / seconds


def table(results: dict[str, dict[str, float | str]]) -> str:
    """The results as a Markdown table (rows = measurements, columns = peers, then the floor)."""
    labels = [PEERS[name].label for name in COLUMNS] + ["floor: this project's primitives only"]
    lines = [
        "| | " + " | ".join(labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    floor_keys = {k for k, _, _ in FLOOR_ROWS}
    our_primitives = results.get(FLOOR_PEER["ours"], {})
    for key, label, _unit in PROTOCOL_ROWS + FLOOR_ROWS:
        cells = []
        for name in COLUMNS:
            column = results.get(name, {})
            floor = results.get(FLOOR_PEER.get(name, name), {})
            source = floor if key in floor_keys else column
            error = source.get("error")
            cells.append(_format(source.get(key), str(error) if error is not None else None))
        cells.append(_format(primitive_floor(key, our_primitives), None))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def profile_ours(round_seconds: float) -> None:
    """cProfile this project's peer on each protocol row and print the top functions."""
    peer = PEERS["ours"]()
    peer.start()
    payload = os.urandom(LARGE)
    cases: list[tuple[str, Batch]] = [
        ("setup", peer.setups),
        ("64 B burst", lambda n: peer.burst(n, PLAINTEXT_64)),
        ("64 B ping-pong", lambda n: peer.ping_pong(n, PLAINTEXT_64)),
        ("64 KiB burst", lambda n: peer.burst(n, payload)),
    ]
    for title, batch in cases:
        rate = measure(batch, round_seconds, 1)
        n = max(1, round(rate * round_seconds))
        profiler = cProfile.Profile()
        profiler.enable()
        batch(n)
        profiler.disable()
        print(f"\n=== {title}: {n} operations, tottime order ===")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(18)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--peer", help="measure one peer in this process and print JSON")
    parser.add_argument("--only", help="comma-separated peers to run (default: all)")
    parser.add_argument("--round-seconds", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passes", type=int, default=2, help="turns over all peers; the best figure counts")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per peer")
    parser.add_argument("--json", type=Path, help="also write the raw results to this file")
    parser.add_argument("--profile", action="store_true", help="profile this project's peer instead")
    arguments = parser.parse_args()

    if arguments.profile:
        profile_ours(arguments.round_seconds * 3)
        return
    if arguments.peer:
        print(json.dumps(run_peer(arguments.peer, arguments.round_seconds, arguments.rounds)))
        return

    names = list(PEERS) if not arguments.only else arguments.only.split(",")
    started = time.perf_counter()
    results: dict[str, dict[str, float | str]] = {}
    for turn in range(1, arguments.passes + 1):
        for name in names:
            print(f"pass {turn}/{arguments.passes}: {name} ...", file=sys.stderr, flush=True)
            measured = run_in_subprocess(name, arguments.round_seconds, arguments.rounds, arguments.timeout)
            results[name] = with_shares(_best(results.get(name), measured))
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"{now}; {_cpu_model()} ({os.cpu_count()} logical CPUs); Python {platform.python_version()}; "
        f"best of {arguments.passes} passes x {arguments.rounds} rounds of {arguments.round_seconds} s; "
        f"run took {time.perf_counter() - started:.0f} s\n"
    )
    print(table(results))
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
