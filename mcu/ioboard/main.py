"""Start-up and main loop of the I/O board firmware: the board file (board.py) gives the pins, iob the logic.

The loop stays at module level on purpose: when the garbage collector runs here, no function of the
firmware is in the middle of a pass (see GC_AT_BYTES in iob/app.py). An exception that escapes a pass
(a bug, a peripheral answering nonsense) switches the outputs safe on its way out; then nothing feeds
the hardware watchdog any more and it restarts the chip, which reports MCU_WATCHDOG (§3.6, §3.9).
Ctrl-C on the USB console (a technician, tools/flash.py mcu) stops charging for maintenance: outputs
safe, the watchdog kept fed, and MicroPython's REPL takes over the console.
"""

import gc

import board
from iob.app import GC_AT_BYTES, Firmware

fw = Firmware(board.Board())
while True:
    try:
        fw.step()
        fw.idle()
    except KeyboardInterrupt:
        fw.maintenance()
        break
    except BaseException:
        fw.fail_safe()
        raise
    if gc.mem_alloc() > GC_AT_BYTES:  # outside the try: no exception handler is active while it collects
        fw.collecting(gc.mem_alloc())
        gc.collect()
        fw.collected(gc.mem_alloc())
