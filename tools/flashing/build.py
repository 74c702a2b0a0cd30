"""``flash.py build``: the agent's code, its pinned runtime dependencies as wheels, a signed manifest.

Dependencies are the ``[project].dependencies`` of pyproject.toml, resolved with requirements.lock as
constraints, as binary wheels for the controller's interpreter and machine (``pip download --only-binary``;
``--platform``/``--python-version`` build for another controller, e.g. ``manylinux2014_aarch64``).
``--wheels-from DIR`` takes them from a wheelhouse instead (offline builds, tests). Every requirement must
have exactly its pinned wheel, and no wheel may need more than unpacking to install (no ``*.data``), which
is how the controller installs them (firmware/maintenance/slots.py).

The modules (the agent's and the wheels') are compiled here once, for the controller's CPython, and shipped in
the bundle as ``bytecode/<cache tag>.zip`` (bundle format 2, docs/bundle-format.md): the controller then installs
without compiling. Only when the controller's Python is the one that builds (the tag and bytecode magic must be
the same); otherwise, or with ``bytecode=False``, the bundle is format 1 and the controller compiles.
"""

from __future__ import annotations

import importlib.util
import platform
import py_compile
import re
import subprocess
import sys
import tempfile
import tomllib
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from firmware.maintenance.bundle import (
    BundleError,
    Bytecode,
    Manifest,
    load_certificate,
    load_private_key,
    safe_relative,
    write_bundle,
)

REPO = Path(__file__).resolve().parents[2]
APP_PACKAGES = ("firmware", "hal")
APP_SUFFIXES = (".py", ".json")
#: Machines as platform.machine() names them (what the controller reports), matched against --platform's tail.
MACHINES = ("x86_64", "aarch64", "armv7l", "i686", "ppc64le", "s390x", "riscv64")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def runtime_requirements(repo: Path = REPO) -> list[str]:
    data = tomllib.loads((repo / "pyproject.toml").read_text())
    deps: list[str] = data["project"]["dependencies"]
    return deps


def app_files(source: Path) -> Iterator[tuple[str, Path]]:
    """The agent's code: firmware/ and hal/ (Python sources and data such as the meter maps)."""
    for package in APP_PACKAGES:
        if not (source / package / "__init__.py").is_file():
            raise BundleError(f"{source / package} is not a Python package: --source must be the checkout's root")
        for path in sorted((source / package).rglob("*")):
            if path.is_file() and path.suffix in APP_SUFFIXES and "__pycache__" not in path.parts:
                yield f"app/{path.relative_to(source).as_posix()}", path


def download_wheels(requirements: list[str], dest: Path, *, constraints: Path | None, platform_tag: str | None,
                    python_version: str | None) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(dest)]
    if constraints is not None:
        cmd += ["--constraint", str(constraints)]
    if platform_tag:
        cmd += ["--platform", platform_tag]
    if python_version:
        cmd += ["--python-version", python_version]
    proc = subprocess.run([*cmd, *requirements], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BundleError(f"pip could not fetch the wheels ({proc.stderr.strip().splitlines()[-1:]}): check the "
                          "network, or build with --wheels-from DIR")


def check_wheels(wheels: list[Path], requirements: list[str]) -> None:
    """Every ``name==version`` has its wheel, and every wheel installs by unpacking."""
    have = {}
    for w in wheels:
        name, version = w.name.split("-")[:2]
        have[_normalize(name)] = version
        with zipfile.ZipFile(w) as z:
            data = [n for n in z.namelist() if n.split("/")[0].endswith(".data")]
        if data:
            raise BundleError(f"{w.name} has a .data directory ({data[0]}): it needs a full installer, which the "
                              "controller does not run")
    for req in requirements:
        name, _, version = req.partition("==")
        if have.get(_normalize(name)) != version:
            raise BundleError(f"no wheel for {req} (found {have.get(_normalize(name)) or 'none'}): the wheelhouse "
                              "does not match pyproject.toml")


#: Fixed zip entry times: the same inputs give the same bytecode archive.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def build_bytecode(app: dict[str, Path], wheels: list[Path], out: Path) -> Bytecode:
    """Compile every module of the slot-to-be — the agent's (``app``: payload path -> file) and the wheels' as they
    will be unpacked into ``lib/`` — with this interpreter into a zip of slot-relative ``__pycache__`` paths.
    Hash-checked pycs: valid whatever the files' times on the controller, and never used for a changed source. A
    module that does not compile (e.g. a library's file for another Python) gets none, as ``compileall`` does."""
    tag = sys.implementation.cache_tag
    with tempfile.TemporaryDirectory(prefix="evse-bytecode-") as tmp_name:
        tmp = Path(tmp_name)
        sources: dict[str, Path] = {rel: path for rel, path in app.items() if rel.endswith(".py")}
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as z:
                for name in z.namelist():
                    if name.endswith(".py"):
                        if not safe_relative(name):
                            raise BundleError(f"{wheel.name}: member {name!r} would leave the slot")
                        target = tmp / "lib" / name
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(z.read(name))
                        sources[f"lib/{name}"] = target
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a library's SyntaxWarnings are not the build's output
            for rel in sorted(sources):
                path = Path(rel)
                cached = (path.parent / "__pycache__" / f"{path.stem}.{tag}.pyc").as_posix()
                cfile = tmp / "pyc" / cached
                try:
                    py_compile.compile(str(sources[rel]), cfile=str(cfile), dfile=rel, doraise=True,
                                       invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
                except py_compile.PyCompileError:
                    continue
                archive.writestr(zipfile.ZipInfo(cached, _ZIP_TIME), cfile.read_bytes(), zipfile.ZIP_DEFLATED)
    return Bytecode(file=f"bytecode/{tag}.zip", cache_tag=tag, magic=importlib.util.MAGIC_NUMBER.hex())


@dataclass(frozen=True)
class BuildResult:
    path: Path
    manifest: Manifest
    size: int
    wheels: int


def build_bundle(out: Path, *, key: Path, cert: Path, hardware_revisions: list[str], version: str | None = None,
                 source: Path = REPO, wheels_from: Path | None = None, platform_tag: str | None = None,
                 python_version: str | None = None, bytecode: bool = True) -> BuildResult:
    """``bytecode``: ship the compiled modules (format 2) when the controller's Python is this one; False makes a
    format-1 bundle, which agents older than format 2 also install."""
    requirements = runtime_requirements()
    files = dict(app_files(source))
    req_text = "".join(r + "\n" for r in requirements)
    with tempfile.TemporaryDirectory(prefix="evse-build-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "requirements.txt").write_text(req_text)
        files["requirements.txt"] = tmp / "requirements.txt"
        if wheels_from is None:
            wheels_from = tmp / "wheels"
            download_wheels(requirements, wheels_from, constraints=REPO / "requirements.lock",
                            platform_tag=platform_tag, python_version=python_version)
        wheels = sorted(p for p in wheels_from.glob("*.whl")
                        if _normalize(p.name.split("-")[0]) not in ("pip", "setuptools", "wheel"))
        check_wheels(wheels, requirements)
        for w in wheels:
            files[f"wheels/{w.name}"] = w
        py = f"cp{python_version.replace('.', '')}" if python_version else \
            f"cp{sys.version_info.major}{sys.version_info.minor}"
        machine = platform.machine()
        if platform_tag:
            known = [m for m in MACHINES if platform_tag.endswith(m)]
            if not known:
                raise BundleError(f"--platform {platform_tag}: expected a pip platform tag ending in one of "
                                  f"{', '.join(MACHINES)}, e.g. manylinux2014_aarch64")
            machine = known[0]
        compiled = None
        if bytecode and py == f"cp{sys.version_info.major}{sys.version_info.minor}":
            archive = tmp / "bytecode.zip"
            compiled = build_bytecode(files, wheels, archive)
            files[compiled.file] = archive
        default_version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
        manifest = write_bundle(out, files, version=version or default_version, hardware_revisions=hardware_revisions,
                                python=py, platform=machine, key=load_private_key(key),
                                certificate=load_certificate(cert), bytecode=compiled)
    return BuildResult(out, manifest, out.stat().st_size, len(wheels))
