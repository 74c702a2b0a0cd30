"""``python tools/flash.py COMMAND``: the field technician's tool (docs/technician-guide.md)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tomllib
from enum import IntEnum
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from firmware.config import ConfigError, parse_config
from firmware.maintenance.access import AGENT_USER
from firmware.maintenance.bundle import BundleError, VerifiedBundle, verify_bundle
from firmware.maintenance.selftest import SelftestReport, format_table
from firmware.security import tls
from tools.flashing import mcu
from tools.flashing.build import build_bundle
from tools.flashing.target import DirTarget, Progress, Target, TargetError, parse_target
from tools.flashing.unit import (
    CONFIG_PATH,
    FIRMWARE_TRUST_PATH,
    HELPER_UNITS,
    REVISION_PATH,
    STATE_DROPIN_PATH,
    SWITCH_DROPIN_PATH,
    UnitFile,
    describe_config,
    security_profile,
    state_dropin,
    unit_files,
)


class Exit(IntEnum):
    OK = 0
    FAILURE = 1  # unexpected error (a bug): the message and a traceback
    USAGE = 2  # bad command line
    REFUSED = 3  # bundle refused: signature, tampering, wrong hardware revision / interpreter; nothing written
    TARGET = 4  # controller unreachable, permission denied, or an I/O error on it
    ROLLED_BACK = 5  # the new agent failed its health check; the previous slot is active again
    INTERRUPTED = 6  # transfer interrupted or damaged: run the same command again (it resumes)
    CHECK_FAILED = 7  # selftest: at least one check failed (the table names it)
    NOT_POSSIBLE = 8  # nothing to roll back to, not commissioned, or a dir:// target cannot run anything
    CONFIG = 78  # commission: the configuration is invalid; nothing written


EXIT_FOR_KIND = {"unreachable": Exit.TARGET, "permission": Exit.TARGET, "io": Exit.TARGET,
                 "interrupted": Exit.INTERRUPTED, "incomplete": Exit.INTERRUPTED, "corrupt": Exit.INTERRUPTED,
                 "state": Exit.NOT_POSSIBLE,
                 "refused": Exit.NOT_POSSIBLE}

EXIT_CODES_HELP = """exit codes:
  0  done                       4  controller unreachable / permission denied
  1  unexpected error           5  health check failed: rolled back to the previous slot
  2  bad command line           6  transfer interrupted: run the same command again to resume
  3  bundle refused (signature, 7  selftest: a check failed
     tampering, hardware)       8  not possible (nothing to roll back to, not commissioned, ...)
                               78  commission: configuration invalid, nothing written"""


class Fail(Exception):
    def __init__(self, code: Exit, message: str) -> None:
        super().__init__(message)
        self.code = code


def say(text: str) -> None:
    print(text, flush=True)


# --- target options ------------------------------------------------------------------------------------


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="TARGET", help="ssh://user@host[:port][/root-dir] or dir:///path")
    p.add_argument("--ssh-key", help="private key for SSH (ssh -i)")
    p.add_argument("--ssh-option", action="append", default=[], metavar="OPT",
                   help="extra ssh -o option, e.g. StrictHostKeyChecking=accept-new (repeatable)")
    p.add_argument("--python", default="python3", help="the controller's Python 3.11 (default: python3)")
    p.add_argument("--local-exec", action="store_true",
                   help="dir:// only: the directory is a root this machine can run (container image, chroot); "
                        "without it nothing is run there (an SD card: no health check, no selftest)")


def _target(args: argparse.Namespace) -> Target:
    options: list[str] = []
    if args.ssh_key:
        options += ["-i", args.ssh_key, "-o", "IdentitiesOnly=yes"]
    for o in args.ssh_option:
        options += ["-o", o]
    try:
        return parse_target(args.target, python=args.python, ssh_options=options, local_exec=args.local_exec)
    except ValueError as exc:
        raise Fail(Exit.USAGE, str(exc)) from None


def _call(target: Target, operation: str, **kwargs: Any) -> dict[str, Any]:
    try:
        return target.call(operation, **kwargs)
    except TargetError as exc:
        raise Fail(EXIT_FOR_KIND.get(exc.kind, Exit.TARGET), str(exc)) from None


def _load_trust(paths: list[str]) -> list[x509.Certificate]:
    paths = paths or ([os.environ["EVSE_FLASH_TRUST"]] if os.environ.get("EVSE_FLASH_TRUST") else [])
    if not paths:
        raise Fail(Exit.USAGE, "no trusted certificate: pass --trust CERT.pem (your organisation's firmware "
                   "signing CA) or set EVSE_FLASH_TRUST")
    certs: list[x509.Certificate] = []
    for p in paths:
        try:
            certs += x509.load_pem_x509_certificates(Path(p).read_bytes())
        except (OSError, ValueError) as exc:
            raise Fail(Exit.USAGE, f"--trust {p}: expected a PEM certificate file ({exc})") from None
    return certs


# --- commands -------------------------------------------------------------------------------------------


def cmd_build(args: argparse.Namespace) -> Exit:
    started = time.monotonic()
    try:
        result = build_bundle(Path(args.out), key=Path(args.key), cert=Path(args.cert),
                              hardware_revisions=args.hardware_revision, version=args.version,
                              source=Path(args.source),
                              wheels_from=Path(args.wheels_from) if args.wheels_from else None,
                              platform_tag=args.platform, python_version=args.python_version,
                              bytecode=not args.no_bytecode)
    except BundleError as exc:
        raise Fail(Exit.REFUSED, f"build failed: {exc}") from None
    except OSError as exc:
        raise Fail(Exit.USAGE, f"build failed: {exc.filename or ''} {exc.strerror or exc}") from None
    m = result.manifest
    say(f"built {result.path}: version {m.version} for hardware {', '.join(m.hardware_revisions)} "
        f"({m.python}, {m.platform}), {len(m.files)} files incl. {result.wheels} wheels, "
        f"{'bytecode for ' + m.bytecode.cache_tag if m.bytecode else 'no bytecode'} (format {m.format}), "
        f"{result.size / 1e6:.1f} MB, in {time.monotonic() - started:.1f} s")
    return Exit.OK


def _verify(args: argparse.Namespace, bundle: Path, revision: str | None) -> VerifiedBundle:
    try:
        return verify_bundle(bundle, _load_trust(args.trust), hardware_revision=revision)
    except BundleError as exc:
        raise Fail(Exit.REFUSED, f"refused, nothing was written: {exc}") from None


def refuse_if_charging(info: dict[str, Any], force: bool, command: str) -> None:
    """A live controller's agent is stopped by ``command``: not while a transaction runs, unless ``force``."""
    running = info.get("open_transactions") or []
    if not running or force:
        return
    what = "; ".join(f"connector {t['connector']} (transaction {t['transaction_id'] or 'not yet numbered'} since "
                     f"{t['started_at']})" for t in running)
    raise Fail(Exit.NOT_POSSIBLE, f"a transaction is running: {what}. {command} would stop the agent and cut it; wait "
               "for it to end (or stop it from the CSMS), or pass --force")


def _stop_service(target: Target) -> None:
    """On a running controller the agent holds the serial ports: stop it for the checks (systemd only)."""
    if target.is_live:
        target.shell("if command -v systemctl >/dev/null; then systemctl stop evse-agent || true; fi", 60)


def _start_service(target: Target) -> None:
    if target.is_live:
        target.shell("if command -v systemctl >/dev/null; then systemctl daemon-reload && "
                     f"systemctl enable --now {' '.join(HELPER_UNITS)} && "
                     "systemctl enable evse-agent && systemctl restart evse-agent; fi", 60)


def _secure(target: Target, units: list[UnitFile] | None = None) -> dict[str, Any]:
    """The agent's user and every mode (firmware/maintenance/access.py), then the one directory its unit lets it
    write (with ``units``, in one call); says what was created or repaired (a controller commissioned by an older
    version is migrated here)."""
    report = _call(target, "secure")
    dropins = [UnitFile(path, state_dropin(report["state_dir"])) for path in (STATE_DROPIN_PATH, SWITCH_DROPIN_PATH)]
    _call(target, "write_files", files=[{"path": u.path, "text": u.text, "mode": 0o644, "link_from": u.link}
                                        for u in [*(units or []), *dropins]])
    a = report["account"]
    news = (["created"] if report["created_user"] else []) + [f"added to {g}" for g in report["added_groups"]]
    say(f"agent user    {a['user']} (uid {a['uid']}, gid {a['gid']}, groups {', '.join(map(str, a['groups']))})"
        f"{''.join(', ' + n for n in news)}; state {report['state_dir']}; "
        f"{len(report['repaired'])} owner/mode(s) repaired")
    for line in report["repaired"]:
        say(f"  repaired    {line}")
    for line in report["warnings"]:
        print(f"warning: {line}", file=sys.stderr, flush=True)
    return report


def _health_command(target: Target, slot: str, args: argparse.Namespace, account: dict[str, Any]) -> str:
    return target.firmware_command(f"opt/evse-agent/slots/{slot}", account=account, args=[
        "healthcheck", "--config", target.path(CONFIG_PATH), "--json", "--timeout", str(args.health_timeout),
        "--settle", str(args.health_settle), *(["--csms-optional"] if args.csms_optional else [])])


def cmd_flash(args: argparse.Namespace) -> Exit:
    started = time.monotonic()
    target = _target(args)
    bundle = Path(args.bundle)
    info = _call(target, "info")
    stated = info["hardware_revision"]
    if stated is not None and args.hardware_revision not in (None, stated):
        raise Fail(Exit.REFUSED, f"refused, nothing was written: the controller states hardware revision {stated!r} "
                   f"itself; --hardware-revision {args.hardware_revision} does not override it")
    revision = stated or args.hardware_revision
    if target.is_live and not args.dry_run:
        refuse_if_charging(info, args.force, "flash")
    if revision is None:
        raise Fail(Exit.REFUSED, f"refused, nothing was written: the controller does not state its hardware revision "
                   f"({target.path(REVISION_PATH)} is missing): pass --hardware-revision, or commission it with "
                   "--hardware-revision")
    verified = _verify(args, bundle, revision)
    m = verified.manifest
    if target.can_execute and not isinstance(target, DirTarget) and (m.python, m.platform) != \
            (info["python"], info["machine"]):
        raise Fail(Exit.REFUSED, f"refused, nothing was written: the bundle is built for {m.python} on {m.platform}, "
                   f"the controller runs {info['python']} on {info['machine']}: build it with --platform/"
                   "--python-version for this controller")
    health = target.can_execute and not args.no_health_check
    if health and not info["commissioned"]:
        raise Fail(Exit.NOT_POSSIBLE, f"the controller is not commissioned ({target.path(CONFIG_PATH)} is missing), so "
                   "the new agent cannot be health-checked: run commission first (or flash with --no-health-check)")
    active = info["active"]
    slot = "b" if active == "a" else "a"
    active_text = f"slot {active} ({info['slots'][active].get('version')})" if active else "none"
    say(f"bundle {m.version} verified: signed by {verified.signer}, {len(m.files)} files, "
        f"{verified.size / 1e6:.1f} MB, hardware {revision}")
    say(f"target {target.url}: active {active_text}; installing into slot {slot}")
    if args.dry_run:
        say("dry run: nothing was written" + ("" if health else "; the health check would not run"))
        return Exit.OK

    up = _call(target, "prepare_upload", sha256=verified.sha256, size=verified.size)
    if up["offset"]:
        say(f"resuming the interrupted transfer at {up['offset'] / 1e6:.1f} MB")
    t0 = time.monotonic()
    try:
        target.upload(bundle, up["path"], up["offset"], Progress(verified.size, up["offset"]))
    except TargetError as exc:
        raise Fail(EXIT_FOR_KIND.get(exc.kind, Exit.TARGET), str(exc)) from None
    transfer_s = time.monotonic() - t0
    t0 = time.monotonic()
    installed = _call(target, "install", sha256=verified.sha256, size=verified.size)
    slot = installed["slot"]
    install_s = time.monotonic() - t0
    say(f"installed {m.version} into slot {slot} (transfer {transfer_s:.1f} s, install {install_s:.1f} s, of "
        f"which unpacking {installed['unpack_s']:.1f} s)")
    account = _secure(target, unit_files(target.root, target.python))["account"]
    _stop_service(target)
    if not health:
        _call(target, "activate", slot=slot)
        say(f"switched: slot {slot} is active")
        why = ("--no-health-check given" if args.no_health_check else
               "nothing can be run on a dir:// target (an SD card): after the first boot, check the "
               "controller with 'selftest ssh://...'")
        _call(target, "record_health", slot=slot, result={"ok": None, "stage": "not run", "detail": why})
        say(f"health check NOT run: {why}")
        _start_service(target)
        say(f"done in {time.monotonic() - started:.1f} s")
        return Exit.OK
    say(f"switching to slot {slot} and running the health check on the controller (if the link drops now, the "
        "controller finishes it and rolls back by itself if it fails)")
    t0 = time.monotonic()
    try:
        outcome = target.call("switch_and_check", slot=slot,
                              health_command=_health_command(target, slot, args, account),
                              timeout_s=args.health_timeout + 120, service="evse-agent" if target.is_live else None,
                              helpers=list(HELPER_UNITS))
    except TargetError as exc:
        if exc.kind == "unreachable":
            raise Fail(Exit.TARGET, f"{exc}\nthe link was lost during the health check: the controller finishes it "
                       "and rolls back by itself if it fails; run 'status' to see the result") from None
        raise Fail(EXIT_FOR_KIND.get(exc.kind, Exit.TARGET), str(exc)) from None
    result = outcome["health"]
    if not result["ok"]:
        say(f"health check FAILED ({result['stage']}): {result['detail']}")
        back = outcome["rolled_back_to"]
        if back is not None:
            restored = (outcome.get("database") or {}).get("restore") or {}
            rows = ", ".join(f"{t}: {n}" for t, n in (restored.get("rows") or {}).items())
            db = (f"; the database is back to schema {restored['schema']}, with the new slot's records carried "
                  f"({rows})") if restored.get("restored") else ""
            raise Fail(Exit.ROLLED_BACK, f"rolled back: slot {back} ({info['slots'][back].get('version')}) is "
                       f"active again{db}; {m.version} stays in slot {slot} for inspection")
        if outcome.get("rollback_refused"):
            raise Fail(Exit.ROLLED_BACK, f"{outcome['rollback_refused']}\nslot {slot} stays active; fix the cause "
                       "above and flash again")
        if outcome.get("deactivated"):
            raise Fail(Exit.ROLLED_BACK, f"this was the first install and it failed: slot {slot} is NOT left active "
                       "(no agent runs); fix the cause above (selftest shows the devices) and flash again")
        raise Fail(Exit.ROLLED_BACK, f"no previous slot to roll back to: slot {slot} stays active; fix the cause "
                   "above (selftest shows the devices) and flash again")
    say(f"health check passed in {time.monotonic() - t0:.1f} s: {result['detail']}")
    say(f"done in {time.monotonic() - started:.1f} s")
    return Exit.OK


def cmd_status(args: argparse.Namespace) -> Exit:
    target = _target(args)
    info = _call(target, "info")
    if args.json:
        say(json.dumps(info, indent=2))
        return Exit.OK
    say(f"controller  {target.url}")
    say(f"hardware    {info['hardware_revision'] or 'unknown'}; commissioned: "
        f"{'yes' if info['commissioned'] else 'no'}")
    a = info["account"]
    say(f"agent user  {a['user']} (uid {a['uid']})" if a else
        "agent user  none yet: the agent runs as root until the next commission or flash creates it")
    say(f"{'slot':<5} {'active':<7} {'version':<12} {'installed at':<21} health")
    for name, s in info["slots"].items():
        if not s["installed"]:
            say(f"{name:<5} {'':<7} {'(empty)':<12}")
            continue
        say(f"{name:<5} {'*' if info['active'] == name else '':<7} {s.get('version', '?'):<12} "
            f"{s.get('installed_at') or '?':<21} {s.get('health', '?')}")
    h = info["last_health"]
    if h:
        verdict = "passed" if h.get("ok") else "not run" if h.get("ok") is None else f"FAILED ({h.get('stage')})"
        say(f"last health check: slot {h['slot']} ({h.get('version')}) {verdict} at {h['at']}: {h.get('detail')}")
    if info["incoming"]:
        say("interrupted transfer on the controller: " + ", ".join(f"{n} ({s / 1e6:.1f} MB)"
                                                                    for n, s in info["incoming"].items()))
    return Exit.OK


def cmd_rollback(args: argparse.Namespace) -> Exit:
    target = _target(args)
    info = _call(target, "info")
    active = info["active"]
    other = "b" if active == "a" else "a"
    if not info["slots"][other]["installed"]:
        raise Fail(Exit.NOT_POSSIBLE, f"nothing to roll back to: slot {other} holds no agent")
    if info["slots"][other].get("health") == "FAILED" and not args.force:
        raise Fail(Exit.NOT_POSSIBLE, f"slot {other} ({info['slots'][other].get('version')}) FAILED its health check: "
                   "not switching to it (use --force if you really mean to)")
    say(f"rollback on {target.url}: slot {active} ({info['slots'][active].get('version') if active else '-'}) -> "
        f"slot {other} ({info['slots'][other].get('version')})")
    if args.dry_run:
        say("dry run: nothing was changed")
        return Exit.OK
    _stop_service(target)
    _call(target, "rollback")
    _start_service(target)
    say(f"slot {other} is active")
    return Exit.OK


#: Where commissioning puts the security profile's files on the controller: in the agent's state directory, its
#: own (0600; firmware/maintenance/access.py repairs owner and modes), where the CSMS may later install or
#: replace them over OCPP (InstallCertificate, CertificateSigned).
CERT_NAMES = {"csms_ca": "certs/csms-root.pem", "cp_cert": "certs/charge-point.pem",
              "cp_key": "certs/charge-point-key.pem"}


def _with_ocpp_keys(text: str, keys: dict[str, str | int]) -> str:
    """``text`` with ``keys`` added at the top of its [ocpp] section (values TOML-quoted as needed)."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.split("#", 1)[0].strip() == "[ocpp]":
            added = [f"{k} = {v if isinstance(v, int) else json.dumps(v)}\n" for k, v in keys.items()]
            return "".join([*lines[:i + 1], *added, *lines[i + 1:]])
    raise Fail(Exit.CONFIG, "configuration error: no [ocpp] section for the security settings\n"
                            "nothing was written to the controller")


def _commissioned_security(args: argparse.Namespace, path: Path, text: str) -> tuple[str, str, list[dict[str, Any]]]:
    """The configuration checked as the agent will run it, as written locally (the given files' local paths) and
    for the controller (their paths there), and the files to install. The profile becomes the configuration's
    ``security_profile`` key (the agent's SecurityProfile at its first start)."""
    files = {"csms_ca": args.csms_ca, "cp_cert": args.cp_cert, "cp_key": args.cp_key}
    given = {k: Path(v) for k, v in files.items() if v is not None}
    try:
        ocpp = tomllib.loads(text).get("ocpp")
    except tomllib.TOMLDecodeError:
        return text, text, []  # parse_config names the error
    if not isinstance(ocpp, dict):
        if given or args.security_profile is not None:
            raise Fail(Exit.CONFIG, f"configuration error: {path}: no [ocpp] section for the security profile\n"
                                    "nothing was written to the controller")
        return text, text, []
    twice = sorted(k for k in given if k in ocpp)
    if twice:
        raise Fail(Exit.CONFIG, f"configuration error: {path}: ocpp.{twice[0]} is in the file and given as "
                                f"--{twice[0].replace('_', '-')}; give it once\nnothing was written to the controller")
    profile = args.security_profile
    if profile is not None and "security_profile" in ocpp and ocpp["security_profile"] != profile:
        raise Fail(Exit.CONFIG, f"configuration error: {path}: ocpp.security_profile is {ocpp['security_profile']}, "
                                f"not {profile}\nnothing was written to the controller")
    if profile is not None and profile >= 2 and not str(ocpp.get("csms_url", "")).startswith("wss://"):
        raise Fail(Exit.CONFIG, f"configuration error: {path}: ocpp: security profile {profile} needs a wss:// URL"
                                "\nnothing was written to the controller")
    state_dir = str(tomllib.loads(text).get("storage", {}).get("dir", "/var/lib/evse-agent"))
    remote = {k: f"{state_dir.rstrip('/')}/{name}" for k, name in CERT_NAMES.items()}
    extra: dict[str, str | int] = {"security_profile": profile} if profile is not None and \
        "security_profile" not in ocpp else {}
    local_text = _with_ocpp_keys(text, {**extra, **{k: str(v.resolve()) for k, v in given.items()}}) \
        if extra or given else text
    remote_text = _with_ocpp_keys(text, {**extra, **{k: remote[k] for k in given}}) if extra or given else text
    installs = []
    for key, local in given.items():
        try:
            content = local.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise Fail(Exit.USAGE, f"--{key.replace('_', '-')} {local}: {exc}") from None
        installs.append({"path": remote[key], "text": content, "mode": 0o600, "local": str(local.resolve())})
    return local_text, remote_text, installs


def _on_target(target: Target, path: str) -> str:
    """A path of the configuration (as the controller sees it) relative to the target's root (a root run where it
    lies, as in the tests, has paths that already start with it: firmware/maintenance/access.py ``on_root``)."""
    top = target.root.rstrip("/")
    if target.root != "/" and path.startswith(top + "/"):
        path = path[len(top):]
    return path.lstrip("/")


def cmd_commission(args: argparse.Namespace) -> Exit:
    path = Path(args.config)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise Fail(Exit.USAGE, f"--config {path}: {exc.strerror or exc}") from None
    local_text, text, installs = _commissioned_security(args, path, text)
    try:
        config = parse_config(local_text, str(path))
    except ConfigError as exc:
        raise Fail(Exit.CONFIG, f"configuration error: {exc}\nnothing was written to the controller") from None
    profile = security_profile(config)
    if args.security_profile is not None and args.security_profile != profile:
        raise Fail(Exit.CONFIG, f"configuration error: {path}: ocpp: the file amounts to security profile {profile}, "
                   f"not {args.security_profile}\nnothing was written to the controller")
    if config.ocpp is not None and config.ocpp.security_profile >= 2:
        assert config.ocpp.csms_ca is not None
        try:  # the certificates load, and the key is the certificate's: a controller that cannot connect is
            tls.client_context(config.ocpp.csms_ca, config.ocpp.cp_cert, config.ocpp.cp_key)  # found out now
        except tls.TlsSetupError as exc:
            raise Fail(Exit.CONFIG, f"configuration error: {path}: ocpp: {exc}\nnothing was written to the "
                                    "controller") from None
    trust_text = _firmware_trust(args.firmware_trust, config.firmware.trust) if args.firmware_trust else None
    target = _target(args)
    info = _call(target, "info")
    if target.is_live and not args.dry_run:  # the agent is restarted to read the new configuration
        refuse_if_charging(info, args.force, "commission")
    for line in describe_config(config):
        for f in installs:  # the files as the controller will have them
            line = line.replace(f["local"], f["path"])
        say(line)
    if args.dry_run:
        say(f"dry run: {target.path(CONFIG_PATH)} not written")
        return Exit.OK
    # the CSMS password: root's, readable by the agent's group (before that group exists: root's alone, and
    # _secure below creates it and repairs the mode)
    _call(target, "write_file", path=CONFIG_PATH, text=text, mode=0o640, group=AGENT_USER)
    for f in installs:  # before _secure below, which gives the state directory's files to the agent's user
        _call(target, "write_file", path=_on_target(target, f["path"]), text=f["text"], mode=f["mode"])
        say(f"installed {f['path']}")
    if args.hardware_revision:
        _call(target, "write_file", path=REVISION_PATH, text=args.hardware_revision + "\n", mode=0o644)
    if trust_text is not None:
        _call(target, "write_file", path=FIRMWARE_TRUST_PATH, text=trust_text, mode=0o644)
        say(f"written {target.path(FIRMWARE_TRUST_PATH)}: the firmware signing certificate(s) updates from the CSMS "
            "must be signed by (root's)")
    say(f"written {target.path(CONFIG_PATH)}" + (f" and hardware revision {args.hardware_revision}"
                                                if args.hardware_revision else ""))
    _secure(target)
    if target.is_live:  # a running agent reads its configuration at start
        target.shell("if command -v systemctl >/dev/null; then systemctl daemon-reload; "
                     "systemctl try-restart evse-agent || true; fi", 60)  # the drop-in may have changed
    return Exit.OK


def _firmware_trust(path: str, configured: str | None) -> str:
    """The PEM text of ``--firmware-trust``, checked; the configuration must name where it goes."""
    try:
        text = Path(path).read_text(encoding="ascii")
        certs = x509.load_pem_x509_certificates(text.encode())
    except (OSError, ValueError) as exc:
        raise Fail(Exit.USAGE, f"--firmware-trust {path}: expected PEM certificates ({exc})") from None
    if configured is None or not configured.endswith("/" + FIRMWARE_TRUST_PATH):  # (under a test root: its prefix)
        raise Fail(Exit.CONFIG, f"configuration error: [firmware] trust must be \"/{FIRMWARE_TRUST_PATH}\" for "
                   f"--firmware-trust (it is {configured!r})\nnothing was written to the controller")
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def cmd_selftest(args: argparse.Namespace) -> Exit:
    target = _target(args)
    info = _call(target, "info")
    if not target.can_execute:
        raise Fail(Exit.NOT_POSSIBLE, "a dir:// target cannot run anything (an SD card): run selftest over ssh:// once "
                   "the controller runs (or use --local-exec for a root this machine can run)")
    if info["active"] is None:
        raise Fail(Exit.NOT_POSSIBLE, "no agent installed on the controller: flash a bundle first")
    if not info["commissioned"]:
        raise Fail(Exit.NOT_POSSIBLE, f"not commissioned ({target.path(CONFIG_PATH)} is missing): run commission first")
    cmd = target.firmware_command("opt/evse-agent/current", account=info["account"], args=[
        "selftest", "--config", target.path(CONFIG_PATH), "--json", "--timeout", str(args.timeout)])
    if target.is_live:  # the agent holds the serial ports: stop it for the test, start it again after
        cmd = ("if command -v systemctl >/dev/null && systemctl is-active --quiet evse-agent; then "
               "systemctl stop evse-agent; trap 'systemctl start evse-agent' EXIT; fi; " + cmd)
    try:
        proc = target.shell(cmd, args.timeout * 20 + 60)
        data = json.loads(proc.stdout)
        report = SelftestReport.from_json(data)
    except TargetError as exc:
        raise Fail(EXIT_FOR_KIND.get(exc.kind, Exit.TARGET), str(exc)) from None
    except (ValueError, KeyError, TypeError):
        err = proc.stderr.decode(errors="replace").strip()
        raise Fail(Exit.TARGET, f"the agent on the controller could not run its self-test (exit {proc.returncode}): "
                   f"{err[-500:]}") from None
    say(json.dumps(data, indent=2) if args.json else format_table(report))
    return Exit.OK if report.ok else Exit.CHECK_FAILED


def cmd_mcu(args: argparse.Namespace) -> Exit:
    started = time.monotonic()
    try:
        return _mcu(args, started)
    except mcu.McuError as exc:
        raise Fail(Exit.USAGE if exc.kind == "usage" else EXIT_FOR_KIND.get(exc.kind, Exit.TARGET), str(exc)) from None


def _mcu(args: argparse.Namespace, started: float) -> Exit:
    version = mcu.firmware_version()
    files = mcu.build(args.board)
    say(f"I/O board firmware {version} for board {args.board}: {len(files)} files, "
        f"{sum(len(f.data) for f in files)} B")
    if args.dry_run:
        for f in files:
            say(f"  would write {f.path:<18} {len(f.data):>6} B  sha256 {f.sha256[:16]}")
        say(f"dry run: {args.port} was not opened")
        return Exit.OK
    board = mcu.Board(args.port)  # Ctrl-C: the running firmware stops charging, outputs safe
    try:
        say(f"connected to the board on {args.port} (its firmware is stopped: outputs safe)")
        if not args.verify_only:
            for path in mcu.write(board, files, say):
                say(f"  removed {path} (left by an earlier firmware)")
        bad = mcu.verify(board, files)
    except BaseException:
        board.close()
        raise
    if bad:
        board.close()
        raise Fail(Exit.INTERRUPTED, "read back from the board, these files differ from the build: " + "; ".join(bad)
                   + ("" if args.verify_only else "\nrun the same command again"))
    say(f"verified: the SHA-256 of all {len(files)} files, computed on the board, match the build")
    if args.verify_only:
        board.close()
        say("verify only: nothing was written; the board stays stopped until it is reset or power-cycled")
        return Exit.OK
    restarted = time.monotonic()
    mcu.restart(board)
    if args.uart is None:
        say("restarted; the hello was not checked (give --uart, the board's host UART, to check it)")
    else:
        hello = mcu.wait_hello(args.uart, restarted)
        mcu.check_hello(hello, version)
        say(f"restarted: BOARD_HELLO on {args.uart} after {time.monotonic() - restarted:.1f} s: firmware "
            f"{hello.firmware_version}, protocol {hello.proto_major}.{hello.proto_minor}, hardware "
            f"{hello.hardware_revision}, reset reason {hello.reset_reason.name}")
    say(f"done in {time.monotonic() - started:.1f} s")
    return Exit.OK


# --- parser ------------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="flash.py", formatter_class=fmt, epilog=EXIT_CODES_HELP,
                                description="Build, flash, commission, self-test and roll back an evse-agent "
                                            "charger controller (docs/technician-guide.md).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("build", help="make a signed firmware bundle", formatter_class=fmt, epilog=EXIT_CODES_HELP)
    b.add_argument("--key", required=True, help="ECDSA P-256 signing key (PEM)")
    b.add_argument("--cert", required=True, help="signing certificate (PEM) matching --key")
    b.add_argument("--hardware-revision", action="append", required=True, metavar="REV",
                   help="controller hardware revision this bundle is for (repeatable)")
    b.add_argument("--out", required=True, help="bundle file to write (e.g. evse-agent-1.2.0.bundle)")
    b.add_argument("--version", help="version (default: pyproject.toml's)")
    b.add_argument("--source", default=str(Path(__file__).resolve().parents[2]),
                   help="checkout holding firmware/ and hal/ (default: this one)")
    b.add_argument("--wheels-from", metavar="DIR", help="take the dependency wheels from DIR (offline)")
    b.add_argument("--platform", help="pip platform tag of the controller, e.g. manylinux2014_aarch64")
    b.add_argument("--python-version", help="the controller's Python, e.g. 3.11")
    b.add_argument("--no-bytecode", action="store_true",
                   help="ship no compiled modules (a format-1 bundle, which agents before format 2 also install; "
                        "the controller compiles at install)")
    b.set_defaults(func=cmd_build)

    f = sub.add_parser("flash", help="verify, transfer, install into the inactive slot, switch, health-check",
                       formatter_class=fmt, epilog=EXIT_CODES_HELP)
    _target_args(f)
    f.add_argument("bundle", metavar="BUNDLE")
    f.add_argument("--trust", action="append", default=[], metavar="CERT",
                   help="trusted signing CA/certificate (PEM; repeatable; default $EVSE_FLASH_TRUST)")
    f.add_argument("--hardware-revision", help="the controller's revision, if it does not state it itself")
    f.add_argument("--no-health-check", action="store_true", help="switch without running the new agent first")
    f.add_argument("--health-timeout", type=float, default=60.0, help="seconds for the agent to get ready (60)")
    f.add_argument("--health-settle", type=float, default=5.0, help="seconds it must then stay up (5)")
    f.add_argument("--csms-optional", action="store_true",
                   help="the health check passes without a CSMS connection (site uplink down); devices must answer")
    f.add_argument("--dry-run", action="store_true", help="verify and show the plan; write nothing")
    f.add_argument("--force", action="store_true", help="flash even while a transaction runs (it is cut)")
    f.set_defaults(func=cmd_flash)

    s = sub.add_parser("status", help="slots, versions, the active one, the last health check",
                       formatter_class=fmt, epilog=EXIT_CODES_HELP)
    _target_args(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    r = sub.add_parser("rollback", help="switch back to the other slot", formatter_class=fmt, epilog=EXIT_CODES_HELP)
    _target_args(r)
    r.add_argument("--dry-run", action="store_true")
    r.add_argument("--force", action="store_true", help="switch even to a slot that failed its health check")
    r.set_defaults(func=cmd_rollback)

    c = sub.add_parser("commission", help="write the charger's configuration, validated first",
                       formatter_class=fmt, epilog=EXIT_CODES_HELP)
    _target_args(c)
    c.add_argument("--config", required=True, help="the charger's agent.toml (docs/configuration.md)")
    c.add_argument("--security-profile", type=int, choices=(0, 1, 2, 3),
                   help="OCPP security profile to commission (written as [ocpp] security_profile; checked against "
                        "what the file holds: a password for 1-2, a CSMS root for 2-3, a certificate for 3)")
    c.add_argument("--csms-ca", help="the CSMS root certificate(s) (PEM) to install (profiles 2 and 3)")
    c.add_argument("--cp-cert", help="the charge point's certificate (PEM) to install (profile 3)")
    c.add_argument("--cp-key", help="its private key (PEM), installed readable by the agent alone (0600)")
    c.add_argument("--hardware-revision", help="also record the controller's hardware revision")
    c.add_argument("--firmware-trust", metavar="CERT", help="the firmware signing CA (PEM) updates from the CSMS must "
                   f"be signed by: written to /{FIRMWARE_TRUST_PATH} (the configuration's [firmware] trust)")
    c.add_argument("--dry-run", action="store_true", help="validate and show; write nothing")
    c.add_argument("--force", action="store_true", help="commission even while a transaction runs (the agent's "
                   "restart cuts it)")
    c.set_defaults(func=cmd_commission)

    t = sub.add_parser("selftest", help="probe every device and the CSMS from the controller",
                       formatter_class=fmt, epilog=EXIT_CODES_HELP)
    _target_args(t)
    t.add_argument("--json", action="store_true", help="the report as JSON, for scripts")
    t.add_argument("--timeout", type=float, default=5.0, help="seconds per probe (5)")
    t.set_defaults(func=cmd_selftest)

    u = sub.add_parser("mcu", help="flash the I/O board's MicroPython firmware over its USB port",
                       formatter_class=fmt, epilog=EXIT_CODES_HELP)
    u.add_argument("port", metavar="PORT", help="the board's USB serial port, e.g. /dev/ttyACM0")
    u.add_argument("--board", default="rp2040", choices=mcu.boards(),
                   help="board file of mcu/ioboard/boards/ (default rp2040)")
    u.add_argument("--uart", metavar="PORT", help="the board's host UART: check the BOARD_HELLO after the restart")
    u.add_argument("--dry-run", action="store_true", help="build and list what would be written; open nothing")
    u.add_argument("--verify-only", action="store_true",
                   help="compare the board's files with the build (hashes computed on the board); write nothing")
    u.set_defaults(func=cmd_mcu)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:
        return Exit.OK if exc.code == 0 else Exit.USAGE
    try:
        return int(args.func(args))
    except Fail as exc:
        print(f"flash.py {args.command}: {exc}", file=sys.stderr)
        return int(exc.code)
    except KeyboardInterrupt:
        print(f"flash.py {args.command}: interrupted; the active slot is untouched unless 'switched' was printed",
              file=sys.stderr)
        return int(Exit.INTERRUPTED)
