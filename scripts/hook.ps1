# Runs an azd hook script (azure.yaml) with a Python that can run it: .venv\Scripts\python.exe, else python3, else
# python (see scripts/hook.sh). A missing interpreter or package fails with a one-line install hint.
#   pwsh scripts/hook.ps1 scripts/register_webhook.py [args...]
$ErrorActionPreference = 'Stop'
Set-Location (Join-Path $PSScriptRoot '..')

$py = $null
foreach ($venv in @('.venv/Scripts/python.exe', '.venv/bin/python')) {
    if (Test-Path $venv) { $py = (Resolve-Path $venv).Path; break }
}
if (-not $py) {
    foreach ($candidate in @('python3', 'python')) {
        $found = Get-Command $candidate -ErrorAction SilentlyContinue
        if ($found) { $py = $found.Source; break }
    }
}
if (-not $py) {
    [Console]::Error.WriteLine('hook: no Python found (.venv, python3 or python); install Python 3.11+, then run: python -m venv .venv; .venv\Scripts\python -m pip install -r requirements.txt')
    exit 1
}
& $py -c 'import httpx, azure.identity' *> $null
if ($LASTEXITCODE -ne 0) {
    [Console]::Error.WriteLine("hook: $py cannot import httpx and azure.identity; run: $py -m pip install -r requirements.txt")
    exit 1
}
& $py @args
exit $LASTEXITCODE
