"""Runs inside MicroPython (tests/test_ioboard_firmware.py): drives the firmware's pure safety logic
(iob/safety.py) through scenarios the test hands over with ``host.call("scenarios")``, on a clock of its
own (milliseconds given in the scenario), and prints one JSON line per scenario.

Each pass is what the main loop does: sample the inputs with the pilot output of the previous pass,
``Safety.step``, apply the outputs. The pilot front end is modelled as in sim/devices/ioboard_mcu.py: the
EV's level on the positive half, -12 V through its diode on the negative half (the EV's level if the
diode is missing), no negative half with X1, -12 V on both with F.

The cable lock's actuator reaches the driven end after LOCK_TRAVEL_MS of drive, unless it is stuck.

Scenario: {"c1_ms": int or null, "lock_cap": bool (default true), "ops": [...]} with ops
  ["ev", mv, diode_ok]    the EV's positive level and diode from now on
  ["pwm", mode, duty]     SET_PWM as the link applies it
  ["allow", on]           ALLOW_CONTACTOR; its result (None or a NACK reason) is recorded
  ["lock", on]            SET_LOCK; its result (None or a NACK reason) is recorded
  ["stuck", on]           the lock actuator jams (does not move) / works again
  ["force", engaged]      the lock's position is forced (someone pulls the plug out of a failed lock)
  ["run", until_ms]       passes every 5 ms up to until_ms; each pass records
                          [t, coil, pilot, faults, permission, lock state, lock switch, lock drive]
"""

import json
import sys

import host

sys.path.insert(0, "/fw")
from iob import proto
from iob.safety import Safety

PASS_MS = 5
LOCK_TRAVEL_MS = 100
CAPS = proto.CAP_RCD | proto.CAP_TEMPERATURE | proto.CAP_MIRROR_CONTACT | proto.CAP_DIODE_CHECK


def sample(applied, ev_mv, diode_ok):
    if applied <= 0:
        return -12000, -12000
    if applied >= 1000:
        return ev_mv, ev_mv
    return ev_mv, -12000 if diode_ok else -ev_mv


def scenario(spec):
    caps = CAPS | proto.CAP_CABLE_LOCK if spec.get("lock_cap", True) else CAPS
    if spec["c1_ms"] is None:
        safety = Safety(caps, proto.RESET_POWER_ON, 0)
    else:
        safety = Safety(caps, proto.RESET_POWER_ON, 0, spec["c1_ms"])
    engaged, stuck, drive, drive_since = False, False, 0, 0
    t = 0
    applied = 1000
    ev_mv, diode_ok = 12000, True
    out = {"c1_timeout_ms": safety.c1_timeout_ms, "results": [], "passes": []}
    for op in spec["ops"]:
        if op[0] == "ev":
            ev_mv, diode_ok = op[1], op[2]
        elif op[0] == "pwm":
            safety.set_pwm(op[1], op[2])
        elif op[0] == "allow":
            out["results"].append(safety.allow(op[1]))
        elif op[0] == "lock":
            out["results"].append(safety.set_lock(op[1]))
        elif op[0] == "stuck":
            stuck = op[1]
        elif op[0] == "force":
            engaged = op[1]
        elif op[0] == "run":
            while t < op[1]:
                t += PASS_MS
                high, low = sample(applied, ev_mv, diode_ok)
                if drive and not stuck and t - drive_since >= LOCK_TRAVEL_MS:
                    engaged = drive == 1
                safety.step(t, high, low, safety.coil, False, 250, engaged)
                applied = safety.output_permille
                if safety.lock_drive != drive:
                    drive, drive_since = safety.lock_drive, t
                out["passes"].append([t, safety.coil, safety.pilot, safety.faults, safety.permission, safety.lock,
                                      engaged, drive])
    return out


for spec in json.loads(host.call("scenarios", b"")):
    print(json.dumps(scenario(spec)))
print("done")
