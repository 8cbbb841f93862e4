"""The stand-in vendor tools are a Java program (java/FneTool.java), as the vendor's are: this compiles it into a
cache folder beside the wrappers (tools/.classes, never committed) and installs a lab's own copy of the wrappers,
shaped by its variants (tools without `.sh`, tools that exit 0 after an error)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import variants as lab_variants

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "java" / "FneTool.java"
TOOLS = HERE / "tools"  # the default shape: NAME.sh, exit status 1 after an error
CLASSES = TOOLS / ".classes"
NAMES = {"server": "serverofflinesynctool", "backoffice": "backofficeofflinesynctool"}


class BuildError(RuntimeError):
    pass


def build() -> Path:
    """Compile FneTool.java into tools/.classes unless the classes there come from this very source. Safe to
    call from several processes at once (a lock file; the classes are swapped in whole)."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()
    stamp = CLASSES / "source.sha256"
    with open(TOOLS / ".classes.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with contextlib.suppress(OSError):
            if stamp.read_text() == digest:
                return CLASSES
        javac = shutil.which("javac", path=os.path.join(os.environ["JAVA_HOME"], "bin")
                             if os.environ.get("JAVA_HOME") else None)
        if javac is None:
            raise BuildError("javac not found (a JDK is needed for the stand-in vendor tools: `make system-deps` "
                             "installs one)")
        fresh = Path(tempfile.mkdtemp(prefix=".classes-", dir=TOOLS))
        proc = subprocess.run([javac, "-nowarn", "-d", str(fresh), str(SOURCE)], capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(fresh, ignore_errors=True)
            raise BuildError(f"javac failed:\n{proc.stdout}{proc.stderr}")
        (fresh / "source.sha256").write_text(digest)
        fresh.chmod(0o755)  # whoever runs the tools (an SSH test user, say) reads the classes
        shutil.rmtree(CLASSES, ignore_errors=True)
        fresh.rename(CLASSES)
    return CLASSES


def install(folder: Path, variants: list[str]) -> Path:
    """A lab's tools folder: wrappers named as its variants install them, running the shared compiled classes."""
    build()
    folder.mkdir(parents=True, exist_ok=True)
    suffix = "" if "tools-without-sh" in variants else ".sh"
    opts = " ".join((["-Dfnelab.exitZero=true"] if "exit-zero-tools" in variants else [])
                    + ([f"-Dfnelab.forceQuery={lab_variants.FORCE_QUERY}"] if "other-force-query" in variants else [])
                    + ([f"-Dfnelab.backofficeZone={lab_variants.BACKOFFICE_OFFSET}"]
                       if "backoffice-local-times" in variants else []))
    for old in folder.iterdir():
        old.unlink()
    for mode, name in NAMES.items():
        script = folder / (name + suffix)
        script.write_text(f"#!/bin/sh\n# Stand-in for the vendor's {name} (fnelab; variants: "
                          f"{', '.join(variants) or 'none'}).\n"
                          f'FNELAB_JVM_OPTS="{opts}" exec "{TOOLS / "_java.sh"}" {mode} "$@"\n')
        script.chmod(0o755)
    return folder
