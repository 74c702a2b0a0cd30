"""Start-up and main loop of the I/O board firmware: the board file (board.py) gives the pins, iob the logic.

The loop stays at module level on purpose: when the garbage collector runs here, no function of the
firmware is in the middle of a pass (see GC_AT_BYTES in iob/app.py).
"""

import gc

import board
from iob.app import GC_AT_BYTES, Firmware

fw = Firmware(board.Board())
while True:
    fw.step()
    if gc.mem_alloc() > GC_AT_BYTES:
        gc.collect()
        fw.heap_live = gc.mem_alloc()
    fw.idle()
