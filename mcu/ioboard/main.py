"""Start-up and main loop of the I/O board firmware: the board file (board.py) gives the pins, iob the logic.

The loop stays at module level on purpose: when the garbage collector runs here, no function of the
firmware is in the middle of a pass (see GC_AT_BYTES in iob/app.py). An exception that escapes a pass
(a bug, a peripheral answering nonsense) switches the outputs safe on its way out; then nothing feeds
the hardware watchdog any more and it restarts the chip, which reports MCU_WATCHDOG (§3.6, §3.9).
"""

import gc

import board
from iob.app import GC_AT_BYTES, Firmware

fw = Firmware(board.Board())
try:
    while True:
        fw.step()
        if gc.mem_alloc() > GC_AT_BYTES:
            gc.collect()
            fw.heap_live = gc.mem_alloc()
        fw.idle()
finally:
    fw.fail_safe()
