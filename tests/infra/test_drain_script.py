"""scripts/drain.py paths that need Azure rather than the local stack (tests/runner/test_drain.py covers the rest):
finding the app and its function key from the azd environment, and the first deploy with no drain endpoint yet."""

from __future__ import annotations

import importlib.util
import json
import sys
from typing import Any

import httpx

from .conftest import ROOT


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("drain_script", ROOT / "scripts" / "drain.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["drain_script"] = module
    spec.loader.exec_module(module)
    return module


drain = _load()
AZD_ENV = {"WEBHOOK_URL": "https://func-abc.azurewebsites.net/api/calls/incoming",
           "AZURE_SUBSCRIPTION_ID": "sub-1", "AZURE_RESOURCE_GROUP": "rg-1", "AZURE_FUNCTION_APP_NAME": "func-abc"}


class Azure:
    """Resource Manager's listkeys and the app's operator API, as one stand-in transport."""

    def __init__(self, deployed: bool = True) -> None:
        self.deployed = deployed
        self.requests: list[httpx.Request] = []
        self.drained = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        url = str(request.url)
        if request.url.host == "management.azure.com":
            assert request.headers["Authorization"] == "Bearer arm-token"
            assert request.url.path == ("/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.Web/sites/"
                                        "func-abc/host/default/listkeys") and request.method == "POST"
            return httpx.Response(200, json={"masterKey": "m", "functionKeys": {"default": "the-key"}})
        assert url.startswith("https://func-abc.azurewebsites.net/api/")
        if not self.deployed:
            return httpx.Response(404)
        if request.headers.get("x-functions-key") != "the-key":
            return httpx.Response(401)
        if request.url.path == "/api/drain":
            if request.method == "POST":
                self.drained = True
                assert json.loads(request.content)["expires_in_minutes"] == 60
            elif request.method == "DELETE":
                self.drained = False
            return httpx.Response(200, json={"drained": self.drained, "source": "flag" if self.drained else "none",
                                             "effective_by": "2000-01-01T00:00:00Z"})
        if request.url.path == "/api/calls":
            return httpx.Response(200, json={"calls": []})
        return httpx.Response(404)


def test_the_app_and_its_function_key_come_from_the_azd_environment(capsys) -> None:
    azure = Azure()
    scopes: list[str] = []
    rc = drain.main(["predeploy"], env=AZD_ENV, transport=httpx.MockTransport(azure), sleep=lambda s: None,
                    token_provider=lambda scope: scopes.append(scope) or "arm-token")
    assert rc == 0 and azure.drained
    assert scopes == ["https://management.azure.com/.default"]
    assert [(r.method, r.url.path) for r in azure.requests][1:] == [("POST", "/api/drain"), ("GET", "/api/calls")]
    assert "the-key" not in capsys.readouterr().err  # the key is never printed


def test_the_first_deploy_has_nothing_to_drain(capsys) -> None:
    azure = Azure(deployed=False)
    rc = drain.main(["predeploy", "--key", "the-key"], env=AZD_ENV, transport=httpx.MockTransport(azure),
                    sleep=lambda s: None)
    assert rc == 0 and "nothing to drain" in capsys.readouterr().err
    # ...but `on` by hand against an app without the endpoint is a failure, not a silent success.
    rc = drain.main(["on", "--key", "the-key"], env=AZD_ENV, transport=httpx.MockTransport(azure))
    assert rc == 1


def test_no_key_and_no_azd_environment_is_a_clear_failure(capsys) -> None:
    rc = drain.main(["status"], env={"WEBHOOK_URL": AZD_ENV["WEBHOOK_URL"]},
                    transport=httpx.MockTransport(Azure()))
    assert rc == 1 and "no function key" in capsys.readouterr().err
