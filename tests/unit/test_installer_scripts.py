"""What can be checked on Linux of the Windows and macOS installers (they cannot be built or run
here: no Windows, no Inno Setup compiler, no macOS, no ``plutil``).

* installer/chargebridge.iss: its sections parse; every [Files] source exists or is the bundle
  that installer/chargebridge.spec produces (its COLLECT/EXE names); every ChargeBridge command in
  [Run], [UninstallRun] and [Icons] is accepted by the real CLI parser (agent.cli.build_parser);
  the placeholders of the task XML templates are exactly the ones its [Code] fills in.
* installer/windows/*.xml: well-formed Task Scheduler XML running ``chargebridgew.exe engine``.
* installer/macos: the LaunchAgent plist, rendered for a user by its install script, loads with
  plistlib and points at the engine, the tray's default home and ~/Library/Logs/ChargeBridge.
"""

from __future__ import annotations

import os
import plistlib
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from agent.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
INSTALLER = ROOT / "installer"
ISS = INSTALLER / "chargebridge.iss"
TASK_NS = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}


# -- a small reader for Inno Setup scripts -------------------------------------------------------
def _split_params(line: str) -> dict[str, str]:
    """Splits one entry line into its parameters: Inno quotes values with " and doubles a " inside."""
    out: dict[str, str] = {}
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] in " \t;":
            i += 1
        if i >= n:
            break
        colon = line.index(":", i)
        key = line[i:colon].strip()
        i = colon + 1
        while i < n and line[i] == " ":
            i += 1
        if i < n and line[i] == '"':
            i += 1
            buf = []
            while True:
                if line[i] == '"':
                    if i + 1 < n and line[i + 1] == '"':
                        buf.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(line[i])
                i += 1
            value = "".join(buf)
        else:
            end = line.find(";", i)
            end = n if end < 0 else end
            value = line[i:end].strip()
            i = end
        out[key] = value
    return out


def _iss() -> tuple[dict[str, str], dict[str, list[str]]]:
    """(#defines, section -> its non-comment lines)."""
    defines: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current = ""
    for raw in ISS.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        m = re.match(r'#define\s+(\w+)\s+"(.*)"$', line)
        if m:
            defines[m.group(1)] = m.group(2)
            continue
        if current == "Code" and not line.startswith("[Code]"):
            sections[current].append(raw)
            continue
        if not line or line.startswith((";", "#")):
            continue
        m = re.fullmatch(r"\[(\w+)\]", line)
        if m:
            current = m.group(1)
            sections.setdefault(current, [])
            continue
        sections.setdefault(current, []).append(line)
    return defines, sections


def _entries(section: str) -> list[dict[str, str]]:
    return [_split_params(line) for line in _iss()[1][section]]


def _expand(text: str, defines: dict[str, str]) -> str:
    text = re.sub(r"\{#(\w+)\}", lambda m: defines[m.group(1)], text)
    for const, value in {"{app}": r"C:\Program Files\ChargeBridge", "{tmp}": r"C:\Temp\is-1",
                         "{commonappdata}": r"C:\ProgramData", "{sys}": r"C:\Windows\System32",
                         "{cmd}": r"C:\Windows\System32\cmd.exe"}.items():
        text = text.replace(const, value)
    return text


def _win_split(text: str) -> list[str]:
    return [a or b for a, b in re.findall(r'"([^"]*)"|(\S+)', text)]


def _spec_names() -> tuple[set[str], str]:
    spec = (INSTALLER / "chargebridge.spec").read_text(encoding="utf-8")
    exes = set()
    for m in re.finditer(r"\bEXE\(", spec):
        name = re.search(r'name="([^"]+)"', spec[m.end():])
        assert name, "an EXE() in the spec has no name"
        exes.add(name.group(1))
    coll = re.search(r"\bCOLLECT\(", spec)
    assert coll
    collect = re.search(r'name="([^"]+)"', spec[coll.end():])
    assert collect
    return exes, collect.group(1)


def test_iss_setup_is_per_machine_with_start_menu_and_tray_at_logon() -> None:
    defines, sections = _iss()
    assert {"Setup", "Tasks", "Files", "Icons", "Registry", "Run", "UninstallRun", "Code"} <= set(sections)
    setup = dict(line.split("=", 1) for line in sections["Setup"])
    assert setup["PrivilegesRequired"] == "admin"
    assert setup["DefaultDirName"] == r"{autopf}\{#AppName}"
    icons = _entries("Icons")
    assert all(i["Name"].startswith("{autoprograms}") for i in icons)
    assert any(i["Filename"] == "{uninstallexe}" for i in icons)
    run_key = [r for r in _entries("Registry") if r.get("ValueType") == "string"]
    assert len(run_key) == 1 and run_key[0]["Root"] == "HKLM"
    assert run_key[0]["Subkey"] == r"Software\Microsoft\Windows\CurrentVersion\Run"
    assert _expand(run_key[0]["ValueData"], defines).strip('"').endswith(r"\chargebridgew.exe")


def test_iss_files_match_the_frozen_bundle_layout() -> None:
    defines, _ = _iss()
    exes, collect = _spec_names()
    assert exes == {"chargebridge", "chargebridgew"}  # console + windowed (Windows only) programs
    # PyInstaller's default --distpath is dist/ next to the repo root; the .iss sits in installer/.
    assert defines["SourceDir"] == rf"..\dist\{collect}"
    for entry in _entries("Files"):
        src = entry["Source"]
        if "external" in entry.get("Flags", "").split():
            assert src.startswith("{code:"), src  # an install-time file (/CONFIG)
            continue
        src = _expand(src, defines)
        if src.endswith("\\*"):
            assert src == rf"..\dist\{collect}\*"
            assert "recursesubdirs" in entry["Flags"]
            continue
        path = INSTALLER / Path(*src.split("\\"))
        assert path.is_file(), f"[Files] Source {src} does not exist"
    # every program the script runs or links from {app} is one the spec builds
    text = ISS.read_text(encoding="utf-8")
    referenced = set(re.findall(r"\{app\}\\([\w.-]+\.exe)", text))
    assert referenced and referenced <= {f"{e}.exe" for e in exes}, referenced


def _chargebridge_commands() -> list[tuple[str, list[str]]]:
    defines, _ = _iss()
    out = []
    for section in ("Run", "UninstallRun", "Icons"):
        for entry in _entries(section):
            argv = [_expand(entry["Filename"], defines), *_win_split(_expand(entry.get("Parameters", ""), defines))]
            for i, arg in enumerate(argv):
                if re.search(r"\\chargebridgew?\.exe$", arg, re.I):
                    out.append((section, argv[i + 1:]))
                    break
    return out


def test_every_chargebridge_command_in_the_iss_is_a_real_cli_verb() -> None:
    commands = _chargebridge_commands()
    verbs = {(args[0] if args else "") for _s, args in commands}
    assert {"config", "doctor", ""} <= verbs, commands  # /CONFIG import, the doctor icon, the tray
    parser = build_parser()
    for section, args in commands:
        try:
            ns = parser.parse_args(args)
        except SystemExit:
            pytest.fail(f"[{section}] chargebridge {' '.join(args)}: not accepted by the CLI")
        if args:
            assert ns.verb == args[0]
    imports = [a for _s, a in commands if a[:2] == ["config", "import"]]
    assert imports and imports[0][2].endswith(r"\deploy.toml")


def test_config_and_purge_switches_are_wired() -> None:
    code = "\n".join(_iss()[1]["Code"])
    assert "{param:CONFIG|}" in code and "{param:ENGINEACCOUNT|}" in code
    assert "'/PURGE'" in code and "usPostUninstall" in code
    config_runs = [e for e in _entries("Run") if "config import" in e.get("Parameters", "")]
    assert len(config_runs) == 1 and config_runs[0]["Check"] == "HasConfig"
    assert "runasoriginaluser" in config_runs[0]["Flags"].split()
    copy = [e for e in _entries("Files") if e["Source"] == "{code:ConfigPath}"]
    assert copy and copy[0]["DestName"] == "deploy.toml" and copy[0]["Check"] == "HasConfig"


@pytest.mark.parametrize("name", ["chargebridge-engine-task.xml", "chargebridge-engine-boot-task.xml"])
def test_task_xml_is_well_formed_and_runs_the_engine(name: str) -> None:
    template = (INSTALLER / "windows" / name).read_text(encoding="utf-8")
    code = "\n".join(_iss()[1]["Code"])
    placeholders = set(re.findall(r"@[A-Z]+@", template))
    filled = set(re.findall(r"StringChangeEx\(Text, '(@[A-Z]+@)'", code))
    assert placeholders and placeholders <= filled, f"{name}: {placeholders - filled} are never filled in"
    rendered = template.replace("@APP@", r"C:\Program Files\ChargeBridge").replace("@ACCOUNT@", r"PRACTICE\svc-cb")
    task = ET.fromstring(rendered.encode("utf-8"))
    assert task.tag == "{%s}Task" % TASK_NS["t"]
    exec_ = task.find("t:Actions/t:Exec", TASK_NS)
    assert exec_ is not None
    assert exec_.findtext("t:Command", namespaces=TASK_NS) == r"C:\Program Files\ChargeBridge\chargebridgew.exe"
    args = (exec_.findtext("t:Arguments", namespaces=TASK_NS) or "").split()
    assert build_parser().parse_args(args).verb == "engine"
    assert task.findtext("t:Settings/t:ExecutionTimeLimit", namespaces=TASK_NS) == "PT0S"
    assert task.find("t:Settings/t:RestartOnFailure", TASK_NS) is not None
    actions = task.find("t:Actions", TASK_NS)
    principal = task.find("t:Principals/t:Principal", TASK_NS)
    assert actions is not None and principal is not None and actions.get("Context") == principal.get("id")
    assert task.findtext("t:RegistrationInfo/t:URI", namespaces=TASK_NS) == "\\" + _iss()[0]["TaskName"]
    if "boot" in name:
        assert task.find("t:Triggers/t:BootTrigger", TASK_NS) is not None
        assert principal.findtext("t:UserId", namespaces=TASK_NS) == r"PRACTICE\svc-cb"
        assert principal.findtext("t:LogonType", namespaces=TASK_NS) == "Password"
    else:
        assert task.find("t:Triggers/t:LogonTrigger", TASK_NS) is not None
        assert principal.findtext("t:GroupId", namespaces=TASK_NS) == "S-1-5-32-545"  # BUILTIN\Users
    assert name in ISS.read_text(encoding="utf-8")


# -- macOS -------------------------------------------------------------------------------------
def test_launch_agent_plist_rendered_for_a_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import platformdirs.macos

    macos = INSTALLER / "macos"
    with (macos / "com.chargebridge.engine.plist").open("rb") as fh:
        assert plistlib.load(fh)["Label"] == "com.chargebridge.engine"  # the template itself is a plist
    home = tmp_path / "Users" / "front desk"
    script = macos / "install-launchagent.sh"
    subprocess.run(["dash", "-n", str(script)], check=True)
    proc = subprocess.run(["sh", str(script), "--print"], env=dict(os.environ, HOME=str(home)),
                          capture_output=True, check=True)
    plist = plistlib.loads(proc.stdout)
    assert plist["Label"] == "com.chargebridge.engine"
    program, *args = plist["ProgramArguments"]
    assert program == "/Applications/ChargeBridge.app/Contents/MacOS/chargebridge"
    assert build_parser().parse_args(args).verb == "engine"
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}  # restarted after a failure, not after a clean stop
    assert plist["ThrottleInterval"] >= 10
    # the same home the tray uses by default on macOS (platformdirs' user data dir)
    monkeypatch.setenv("HOME", str(home))
    # newer platformdirs honour XDG_DATA_HOME on macOS too (scripts/with-keyring.sh sets one); a
    # Mac's login session has none
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    tray_home = platformdirs.macos.MacOS("ChargeBridge", appauthor=False).user_data_dir
    assert plist["EnvironmentVariables"]["CHARGEBRIDGE_HOME"] == tray_home == f"{home}/Library/Application Support/ChargeBridge"
    logs = home / "Library" / "Logs" / "ChargeBridge"
    assert Path(plist["StandardOutPath"]).parent == logs == Path(plist["StandardErrorPath"]).parent
    assert plist["Umask"] == 0o077
    assert "@HOME@" not in proc.stdout.decode()
