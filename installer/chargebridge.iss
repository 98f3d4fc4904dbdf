; Inno Setup script for ChargeBridge on Windows (Inno Setup 6.3 or later).
;
; NOT BUILT OR RUN in the Linux CI that produced it: build and test it on Windows (see
; installer/README.md, "Windows"). It packages the onedir bundle that
;   pyinstaller installer\chargebridge.spec --noconfirm --clean
; produces on Windows in dist\chargebridge\ (chargebridge.exe = console CLI, chargebridgew.exe =
; the same program without a console window, for the tray and the engine task).
;
;   iscc /DAppVersion=0.1.0 installer\chargebridge.iss     ->  dist\ChargeBridge-0.1.0-setup.exe
;
; Silent install (IT):  ChargeBridge-0.1.0-setup.exe /VERYSILENT /SUPPRESSMSGBOXES /NORESTART /SP-
;                       [/DIR="D:\Apps\ChargeBridge"] [/MERGETASKS="!traystart"] [/LOG="C:\Windows\Temp\cb.log"]
; Silent uninstall:     "C:\Program Files\ChargeBridge\unins000.exe" /VERYSILENT /SUPPRESSMSGBOXES /NORESTART
;
; What it sets up (machine-wide; needs administrator rights):
; * the program in {autopf}\ChargeBridge;
; * task "traystart": the tray starts at every user's sign-in (HKLM\...\Run, chargebridgew.exe);
; * task "enginetask": the engine runs at every user's sign-in as that user, from a scheduled task
;   \ChargeBridge\Engine (trigger: logon of any member of BUILTIN\Users; restart on failure).
;   Not a Windows service: the store key lives in the signed-in user's Credential Manager,
;   which a service account cannot read. Servers without a signed-in user: see the README.
; User data (each user's %LOCALAPPDATA%\ChargeBridge home and the keyring entries) is never
; removed by the uninstaller: it holds the encrypted store and its key.

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

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\chargebridgew.exe"; WorkingDir: "{app}"; Comment: "Charge sync status and review"

[Registry]
; The tray for every user at sign-in (a user can still turn it off in Task Manager > Startup).
Root: HKLM; Subkey: "Software\Microsoft\Windows\CurrentVersion\Run"; ValueType: string; ValueName: "{#AppName}"; ValueData: """{app}\chargebridgew.exe"""; Tasks: traystart; Flags: uninsdeletevalue
; Without the task, make sure an older install's value is gone.
Root: HKLM; Subkey: "Software\Microsoft\Windows\CurrentVersion\Run"; ValueName: "{#AppName}"; ValueType: none; Tasks: not traystart; Flags: deletevalue

[Run]
; Register (or replace) the engine's logon task from the XML written just before.
Filename: "{sys}\schtasks.exe"; Parameters: "/Create /F /TN ""{#TaskName}"" /XML ""{tmp}\chargebridge-engine-task.xml"""; Flags: runhidden waituntilterminated; Tasks: enginetask; BeforeInstall: WriteEngineTaskXml; StatusMsg: "Registering the ChargeBridge engine task..."
; Remove the task when the option is not chosen (e.g. /MERGETASKS="!enginetask" on an upgrade).
Filename: "{sys}\schtasks.exe"; Parameters: "/Delete /F /TN ""{#TaskName}"""; Flags: runhidden waituntilterminated; Tasks: not enginetask
; Start the engine now in the sessions of signed-in users (otherwise it starts at the next sign-in).
Filename: "{sys}\schtasks.exe"; Parameters: "/Run /TN ""{#TaskName}"""; Flags: runhidden waituntilterminated; Tasks: enginetask
; Interactive installs only: offer to start the tray for the user who ran the installer.
Filename: "{app}\chargebridgew.exe"; Description: "Start ChargeBridge now"; Flags: nowait postinstall skipifsilent runasoriginaluser unchecked

[UninstallRun]
Filename: "{sys}\schtasks.exe"; Parameters: "/End /TN ""{#TaskName}"""; Flags: runhidden waituntilterminated; RunOnceId: "EndEngineTask"
Filename: "{sys}\schtasks.exe"; Parameters: "/Delete /F /TN ""{#TaskName}"""; Flags: runhidden waituntilterminated; RunOnceId: "DeleteEngineTask"
Filename: "{sys}\taskkill.exe"; Parameters: "/F /T /IM chargebridgew.exe"; Flags: runhidden waituntilterminated; RunOnceId: "StopTray"
Filename: "{sys}\taskkill.exe"; Parameters: "/F /T /IM chargebridge.exe"; Flags: runhidden waituntilterminated; RunOnceId: "StopCli"

[Code]
function XmlEscape(const S: String): String;
begin
  Result := S;
  StringChangeEx(Result, '&', '&amp;', True);
  StringChangeEx(Result, '<', '&lt;', True);
  StringChangeEx(Result, '>', '&gt;', True);
  StringChangeEx(Result, '"', '&quot;', True);
end;

{ The engine task: at the logon of any member of BUILTIN\Users (S-1-5-32-545), in that user's
  session with their own token (so keyring = their Credential Manager), no time limit, one
  instance, not stopped on battery, restarted every minute if it fails. }
procedure WriteEngineTaskXml();
var
  Xml: String;
  Lines: TArrayOfString;
begin
  Xml :=
    '<?xml version="1.0" encoding="UTF-8"?>' + #13#10 +
    '<Task version="1.3" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">' + #13#10 +
    '  <RegistrationInfo>' + #13#10 +
    '    <Author>ChargeBridge installer</Author>' + #13#10 +
    '    <Description>ChargeBridge engine: watches the EHR export folders, syncs charges to billing and serves the tray''s local API. Runs as the signed-in user so the store key stays in that user''s Credential Manager.</Description>' + #13#10 +
    '    <URI>\{#TaskName}</URI>' + #13#10 +
    '  </RegistrationInfo>' + #13#10 +
    '  <Triggers>' + #13#10 +
    '    <LogonTrigger>' + #13#10 +
    '      <Enabled>true</Enabled>' + #13#10 +
    '    </LogonTrigger>' + #13#10 +
    '  </Triggers>' + #13#10 +
    '  <Principals>' + #13#10 +
    '    <Principal id="Users">' + #13#10 +
    '      <GroupId>S-1-5-32-545</GroupId>' + #13#10 +
    '      <RunLevel>LeastPrivilege</RunLevel>' + #13#10 +
    '    </Principal>' + #13#10 +
    '  </Principals>' + #13#10 +
    '  <Settings>' + #13#10 +
    '    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>' + #13#10 +
    '    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>' + #13#10 +
    '    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>' + #13#10 +
    '    <AllowHardTerminate>true</AllowHardTerminate>' + #13#10 +
    '    <StartWhenAvailable>true</StartWhenAvailable>' + #13#10 +
    '    <RunOnlyIfNetworkAvailable>false</RunOnlyIfNetworkAvailable>' + #13#10 +
    '    <IdleSettings>' + #13#10 +
    '      <StopOnIdleEnd>false</StopOnIdleEnd>' + #13#10 +
    '      <RestartOnIdle>false</RestartOnIdle>' + #13#10 +
    '    </IdleSettings>' + #13#10 +
    '    <AllowStartOnDemand>true</AllowStartOnDemand>' + #13#10 +
    '    <Enabled>true</Enabled>' + #13#10 +
    '    <Hidden>false</Hidden>' + #13#10 +
    '    <RunOnlyIfIdle>false</RunOnlyIfIdle>' + #13#10 +
    '    <WakeToRun>false</WakeToRun>' + #13#10 +
    '    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>' + #13#10 +
    '    <Priority>7</Priority>' + #13#10 +
    '    <RestartOnFailure>' + #13#10 +
    '      <Interval>PT1M</Interval>' + #13#10 +
    '      <Count>999</Count>' + #13#10 +
    '    </RestartOnFailure>' + #13#10 +
    '  </Settings>' + #13#10 +
    '  <Actions Context="Users">' + #13#10 +
    '    <Exec>' + #13#10 +
    '      <Command>' + XmlEscape(ExpandConstant('{app}\chargebridgew.exe')) + '</Command>' + #13#10 +
    '      <Arguments>engine</Arguments>' + #13#10 +
    '      <WorkingDirectory>' + XmlEscape(ExpandConstant('{app}')) + '</WorkingDirectory>' + #13#10 +
    '    </Exec>' + #13#10 +
    '  </Actions>' + #13#10 +
    '</Task>' + #13#10;
  SetArrayLength(Lines, 1);
  Lines[0] := Xml;
  if not SaveStringsToUTF8File(ExpandConstant('{tmp}\chargebridge-engine-task.xml'), Lines, False) then
    Log('could not write the engine task XML');
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
