; Inno Setup script for ChargeBridge on Windows (Inno Setup 6.3 or later).
;
; NOT COMPILED OR RUN here: the project's CI is Linux (no Windows, no ISCC). Build and test it on
; Windows (installer/README.md, "Windows"). What CAN be checked on Linux is, by
; tests/unit/test_installer_scripts.py: the sections parse, every [Files] source exists or is the
; frozen bundle the spec produces, every chargebridge command in [Run]/[UninstallRun]/[Icons] is a
; real CLI verb, the task XML files are well-formed with the right command.
;
; It packages the onedir bundle that
;   pyinstaller installer\chargebridge.spec --noconfirm --clean
; produces on Windows in dist\chargebridge\ (chargebridge.exe = console CLI, chargebridgew.exe =
; the same program without a console window, for the tray and the engine task).
;
;   iscc /DAppVersion=0.1.0 installer\chargebridge.iss     ->  dist\ChargeBridge-0.1.0-setup.exe
;
; Silent install (IT):  ChargeBridge-0.1.0-setup.exe /VERYSILENT /SUPPRESSMSGBOXES /NORESTART /SP-
;                       [/CONFIG="\\server\it\chargebridge.toml"] [/DIR="D:\Apps\ChargeBridge"]
;                       [/MERGETASKS="!traystart"] [/ENGINEACCOUNT="PRACTICE\svc-chargebridge"]
;                       [/LOG="C:\Windows\Temp\cb.log"]
; Silent uninstall:     "C:\Program Files\ChargeBridge\unins000.exe" /VERYSILENT /SUPPRESSMSGBOXES /NORESTART [/PURGE]
;
; What it sets up (machine-wide; needs administrator rights):
; * the program in {autopf}\ChargeBridge, Start menu entries (tray, doctor, IT guide, uninstall);
; * task "traystart": the tray starts at every user's sign-in (HKLM\...\Run, chargebridgew.exe);
; * task "enginetask": the engine runs at every user's sign-in as that user, from the scheduled
;   task \ChargeBridge\Engine (windows\chargebridge-engine-task.xml: logon of any member of
;   BUILTIN\Users; restart on failure). Not a Windows service: the store key lives in the user's
;   Credential Manager, which a service account cannot read. A server nobody signs in to:
;   /ENGINEACCOUNT=DOMAIN\user writes windows\chargebridge-engine-boot-task.xml (at boot, as that
;   account) into the install folder for IT to register with the account's password (README);
; * /CONFIG=path: the file is copied to {commonappdata}\ChargeBridge\deploy.toml and applied with
;   `chargebridge config import` for the user who runs the setup (validated; a bad file fails the
;   step and is logged, the install itself stays).
; Uninstall keeps every user's %LOCALAPPDATA%\ChargeBridge (the encrypted store) unless /PURGE is
; given or, interactively, the user answers Yes to "also delete the data".

#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif
#define AppName "ChargeBridge"
#define TaskName "ChargeBridge\Engine"
#define SourceDir "..\dist\chargebridge"

[Setup]
; Never change AppId: upgrades find the installed copy by it.
AppId={{6E0C2F4B-8E0B-4C5B-9B7E-2D6C1B3A9F41}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=ChargeBridge
DefaultDirName={autopf}\{#AppName}
DisableDirPage=auto
DisableProgramGroupPage=yes
DisableReadyPage=no
PrivilegesRequired=admin
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
MinVersion=10.0
OutputDir=..\dist
OutputBaseFilename={#AppName}-{#AppVersion}-setup
Compression=lzma2/ultra64
SolidCompression=yes
WizardStyle=modern
; Close running copies (tray, engine, CLI) before files are replaced; they are stopped
; explicitly in PrepareToInstall as well, since the engine may run in other users' sessions.
CloseApplications=force
RestartApplications=no
SetupLogging=yes
UninstallDisplayName={#AppName}
UninstallDisplayIcon={app}\chargebridge.exe
VersionInfoVersion={#AppVersion}
VersionInfoProductName={#AppName}

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "traystart"; Description: "Start the ChargeBridge tray when any user signs in"; GroupDescription: "Start-up:"
Name: "enginetask"; Description: "Run the ChargeBridge engine when any user signs in (restarts after a failure)"; GroupDescription: "Start-up:"

[InstallDelete]
; A new build may drop files the old one had: start from a clean _internal folder.
Type: filesandordirs; Name: "{app}\_internal"

[Files]
Source: "{#SourceDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs
Source: "windows\chargebridge-engine-task.xml"; DestDir: "{app}"; Flags: ignoreversion
Source: "windows\chargebridge-engine-boot-task.xml"; DestDir: "{app}\templates"; Flags: ignoreversion
Source: "README.md"; DestDir: "{app}"; DestName: "IT-README.md"; Flags: ignoreversion
; /CONFIG=path: a copy IT can apply again for other users (chargebridge config import FILE).
Source: "{code:ConfigPath}"; DestDir: "{commonappdata}\{#AppName}"; DestName: "deploy.toml"; Flags: external ignoreversion; Check: HasConfig

[Dirs]
Name: "{commonappdata}\{#AppName}"; Check: HasConfig

[Icons]
Name: "{autoprograms}\{#AppName}\{#AppName}"; Filename: "{app}\chargebridgew.exe"; WorkingDir: "{app}"; Comment: "Charge sync status and review"
Name: "{autoprograms}\{#AppName}\{#AppName} doctor"; Filename: "{cmd}"; Parameters: "/k ""{app}\chargebridge.exe"" doctor"; WorkingDir: "{app}"; Comment: "What is missing or wrong, and how to fix it"
Name: "{autoprograms}\{#AppName}\IT guide"; Filename: "{app}\IT-README.md"
Name: "{autoprograms}\{#AppName}\Uninstall {#AppName}"; Filename: "{uninstallexe}"

[Registry]
; The tray for every user at sign-in (a user can still turn it off in Task Manager > Startup).
Root: HKLM; Subkey: "Software\Microsoft\Windows\CurrentVersion\Run"; ValueType: string; ValueName: "{#AppName}"; ValueData: """{app}\chargebridgew.exe"""; Tasks: traystart; Flags: uninsdeletevalue
; Without the task, make sure an older install's value is gone.
Root: HKLM; Subkey: "Software\Microsoft\Windows\CurrentVersion\Run"; ValueName: "{#AppName}"; ValueType: none; Tasks: not traystart; Flags: deletevalue

[Run]
; Register (or replace) the engine's logon task from windows\chargebridge-engine-task.xml, with
; the install folder filled in (written to {tmp} just before).
Filename: "{sys}\schtasks.exe"; Parameters: "/Create /F /TN ""{#TaskName}"" /XML ""{tmp}\chargebridge-engine-task.xml"""; Flags: runhidden waituntilterminated; Tasks: enginetask; Check: not HasEngineAccount; BeforeInstall: WriteEngineTaskXml; StatusMsg: "Registering the ChargeBridge engine task..."
; Remove the task when the option is not chosen (e.g. /MERGETASKS="!enginetask" on an upgrade).
Filename: "{sys}\schtasks.exe"; Parameters: "/Delete /F /TN ""{#TaskName}"""; Flags: runhidden waituntilterminated; Tasks: not enginetask
; /CONFIG=path: applied for the user who runs the setup (their home), from the copy made above.
Filename: "{app}\chargebridge.exe"; Parameters: "config import ""{commonappdata}\{#AppName}\deploy.toml"""; Flags: runhidden waituntilterminated runasoriginaluser; Check: HasConfig; StatusMsg: "Applying the configuration..."
; Start the engine now in the sessions of signed-in users (otherwise it starts at the next sign-in).
Filename: "{sys}\schtasks.exe"; Parameters: "/Run /TN ""{#TaskName}"""; Flags: runhidden waituntilterminated; Tasks: enginetask; Check: not HasEngineAccount
; Interactive installs only: offer to start the tray for the user who ran the installer.
Filename: "{app}\chargebridgew.exe"; Description: "Start ChargeBridge now"; Flags: nowait postinstall skipifsilent runasoriginaluser unchecked

[UninstallRun]
Filename: "{sys}\schtasks.exe"; Parameters: "/End /TN ""{#TaskName}"""; Flags: runhidden waituntilterminated; RunOnceId: "EndEngineTask"
Filename: "{sys}\schtasks.exe"; Parameters: "/Delete /F /TN ""{#TaskName}"""; Flags: runhidden waituntilterminated; RunOnceId: "DeleteEngineTask"
Filename: "{sys}\taskkill.exe"; Parameters: "/F /T /IM chargebridgew.exe"; Flags: runhidden waituntilterminated; RunOnceId: "StopTray"
Filename: "{sys}\taskkill.exe"; Parameters: "/F /T /IM chargebridge.exe"; Flags: runhidden waituntilterminated; RunOnceId: "StopCli"

[UninstallDelete]
; Files the program wrote into its own folder (rendered task XML); data never lives here.
Type: files; Name: "{app}\chargebridge-engine-boot-task.xml"

[Code]
var
  PurgeData: Boolean;

function XmlEscape(const S: String): String;
begin
  Result := S;
  StringChangeEx(Result, '&', '&amp;', True);
  StringChangeEx(Result, '<', '&lt;', True);
  StringChangeEx(Result, '>', '&gt;', True);
  StringChangeEx(Result, '"', '&quot;', True);
end;

{ /CONFIG=path (a chargebridge.toml exported with `chargebridge config export`). }
function ConfigPath(Param: String): String;
begin
  Result := ExpandConstant('{param:CONFIG|}');
end;

function HasConfig(): Boolean;
begin
  Result := ConfigPath('') <> '';
end;

function EngineAccount(): String;
begin
  Result := ExpandConstant('{param:ENGINEACCOUNT|}');
end;

function HasEngineAccount(): Boolean;
begin
  Result := EngineAccount() <> '';
end;

function InitializeSetup(): Boolean;
begin
  Result := True;
  if HasConfig() and not FileExists(ConfigPath('')) then
  begin
    Log('/CONFIG file not found: ' + ConfigPath(''));
    SuppressibleMsgBox('The configuration file given with /CONFIG was not found:' + #13#10 + ConfigPath('') +
      #13#10#13#10 + 'Give the full path of a file made with "chargebridge config export".', mbCriticalError, MB_OK, IDOK);
    Result := False;
  end;
end;

{ Reads a shipped template from {app}, fills in the placeholders, writes it to Dest. }
procedure RenderTemplate(const Template, Dest, Account: String);
var
  Xml: AnsiString;
  Text: String;
begin
  if not LoadStringFromFile(ExpandConstant('{app}\') + Template, Xml) then
  begin
    Log('could not read ' + Template);
    Exit;
  end;
  Text := String(Xml);
  StringChangeEx(Text, '@APP@', XmlEscape(ExpandConstant('{app}')), True);
  StringChangeEx(Text, '@ACCOUNT@', XmlEscape(Account), True);
  if not SaveStringToFile(Dest, AnsiString(Text), False) then
    Log('could not write ' + Dest);
end;

procedure WriteEngineTaskXml();
begin
  RenderTemplate('chargebridge-engine-task.xml', ExpandConstant('{tmp}\chargebridge-engine-task.xml'), '');
end;

procedure WriteBootTaskXml();
begin
  RenderTemplate('templates\chargebridge-engine-boot-task.xml',
    ExpandConstant('{app}\chargebridge-engine-boot-task.xml'), EngineAccount());
  Log('boot task XML for ' + EngineAccount() + ' written; register it with schtasks /Create ... /RU ... /RP (installer/README.md)');
end;

procedure RunHidden(const Exe, Params: String);
var
  Code: Integer;
begin
  if Exec(Exe, Params, '', SW_HIDE, ewWaitUntilTerminated, Code) then
    Log(Format('%s %s -> %d', [Exe, Params, Code]))
  else
    Log(Format('%s %s could not run', [Exe, Params]));
end;

{ Upgrades: stop the engine task and every running copy (all sessions) before files are
  replaced. The engine is crash-safe by design (README: nothing lost or doubled), and the task
  and the tray start it again. }
function PrepareToInstall(var NeedsRestart: Boolean): String;
begin
  RunHidden(ExpandConstant('{sys}\schtasks.exe'), '/End /TN "{#TaskName}"');
  RunHidden(ExpandConstant('{sys}\taskkill.exe'), '/F /T /IM chargebridgew.exe');
  RunHidden(ExpandConstant('{sys}\taskkill.exe'), '/F /T /IM chargebridge.exe');
  Sleep(1000);
  Result := '';
end;

{ /ENGINEACCOUNT: the boot task's XML for that account, for IT to register with its password. }
procedure CurStepChanged(CurStep: TSetupStep);
begin
  if (CurStep = ssPostInstall) and HasEngineAccount() then
    WriteBootTaskXml();
end;

{ Uninstall keeps the data unless /PURGE is given or, interactively, the user says Yes. }
function InitializeUninstall(): Boolean;
begin
  PurgeData := Pos('/PURGE', Uppercase(GetCmdTail())) > 0;
  if not PurgeData and not UninstallSilent() then
    PurgeData := MsgBox('Also delete the ChargeBridge data (the encrypted store, settings and logs) of every user on this PC?' +
      #13#10#13#10 + 'Choose No to keep it (a later install finds it again).', mbConfirmation, MB_YESNO or MB_DEFBUTTON2) = IDYES;
  Result := True;
end;

{ Every profile's %LOCALAPPDATA%\ChargeBridge (the homes), and ProgramData\ChargeBridge. The
  Credential Manager entries stay: without the store they unlock nothing. }
procedure PurgeHomes();
var
  Users: String;
  Found: TFindRec;
begin
  DelTree(ExpandConstant('{localappdata}\{#AppName}'), True, True, True);
  DelTree(ExpandConstant('{commonappdata}\{#AppName}'), True, True, True);
  Users := ExtractFileDir(GetEnv('PUBLIC'));
  if (Users <> '') and FindFirst(Users + '\*', Found) then
  try
    repeat
      if (Found.Attributes and FILE_ATTRIBUTE_DIRECTORY <> 0) and (Found.Name <> '.') and (Found.Name <> '..') then
        DelTree(Users + '\' + Found.Name + '\AppData\Local\{#AppName}', True, True, True);
    until not FindNext(Found);
  finally
    FindClose(Found);
  end;
end;

procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
begin
  if (CurUninstallStep = usPostUninstall) and PurgeData then
  begin
    Log('purging ChargeBridge data (/PURGE or confirmed)');
    PurgeHomes();
  end;
end;
