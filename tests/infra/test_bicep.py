"""Offline checks of infra/: parse with pycep-parser (what checkov uses), checkov, and design invariants.

There is no Bicep compiler offline, so these tests stand in for `az bicep build`: a file pycep cannot
parse fails here (checkov would only count it as a "parsing error" and still exit 0).
pycep represents both identifiers and string literals as plain strings, hence the helper below that
reads a resource body as "the set of strings in it".
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import BICEP_FILES, INFRA, ROOT

# --------------------------------------------------------------------------------------------------
# helpers


def strings_in(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in [str(k), *strings_in(v)]]
    if isinstance(node, list):
        return [s for v in node for s in strings_in(v)]
    return []


def code(path: Path) -> str:
    """Bicep source without // comments (comments may name the constructs being banned)."""
    return re.sub(r"(^|\s)//.*", "", path.read_text(), flags=re.MULTILINE)


def body(resource: dict[str, Any]) -> dict[str, Any]:
    """Resource body without the loop/condition wrapper pycep adds."""
    config = resource["config"]
    while "config" in config and ("loop_type" in config or "condition" in config):
        config = config["config"]
    return config


def resources_of_type(bicep: dict, type_: str) -> list[tuple[str, str, dict]]:
    return [(f, name, r) for f, doc in bicep.items() for name, r in doc["resources"].items()
            if r["type"] == type_ and not r["existing"]]


def only(bicep: dict, type_: str) -> dict[str, Any]:
    found = resources_of_type(bicep, type_)
    assert len(found) == 1, f"expected one {type_}, found {[(f, n) for f, n, _ in found]}"
    return body(found[0][2])


def app_settings(bicep: dict) -> dict[str, Any]:
    """name -> value of every app setting the Function App can get (all conditional lists included)."""
    variables = bicep["modules/functionapp.bicep"]["variables"]
    site = only(bicep, "Microsoft.Web/sites")
    combined = site["properties"]["siteConfig"]["appSettings"]
    assert combined["function"]["type"] == "concat"
    settings: dict[str, Any] = {}
    for var_name in combined["function"]["parameters"].values():
        value = variables[var_name]["value"]
        if isinstance(value, dict) and "operator" in value:  # cond ? [...] : []
            operands = value["operator"]["operands"]
            value = operands["true_value"] + operands["false_value"]
        for item in value:
            assert item["name"] not in settings, f"app setting {item['name']} set twice"
            settings[item["name"]] = item["value"]
    return settings


# --------------------------------------------------------------------------------------------------
# parsing and checkov


def test_layout() -> None:
    names = {str(p.relative_to(INFRA)) for p in BICEP_FILES}
    assert "main.bicep" in names
    assert all(n == "main.bicep" or n.startswith("modules/") for n in names), names
    assert (INFRA / "main.parameters.json").is_file()
    assert not list(INFRA.rglob("*.bicepparam")), "nothing offline can parse .bicepparam"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_bicep_file_parses_with_pycep(path: Path) -> None:
    from pycep import BicepParser

    doc = BicepParser().parse(file_path=path)  # raises on syntax pycep 0.5.1 does not know
    assert doc.get("resources") or doc.get("modules"), f"{path} parsed to nothing"


def test_no_registry_modules_or_unparseable_constructs() -> None:
    for path in BICEP_FILES:
        text = code(path)
        assert "br/public:" not in text and "br:" not in text, f"{path}: use raw resources, not registry modules"
        assert "deployer()" not in text, f"{path}: deployer() is not parsed by pycep 0.5.1"
        assert not re.search(r"\bstring\?|\bint\?|\bobject\?", text), f"{path}: nullable types break pycep 0.5.1"
        assert not re.search(r"\.\.\.\w", text), f"{path}: object spread breaks pycep"


ALLOWED_SKIPS = {
    # check id: resource type it may be skipped on (each skip carries its reason inline)
    "CKV_AZURE_134": "Microsoft.CognitiveServices/accounts",
    "CKV_AZURE_35": "Microsoft.Storage/storageAccounts",
    "CKV_AZURE_59": "Microsoft.Storage/storageAccounts",
    "CKV_AZURE_206": "Microsoft.Storage/storageAccounts",
    "CKV_AZURE_225": "Microsoft.Web/serverfarms",
    "CKV_AZURE_222": "Microsoft.Web/sites",
    "CKV_AZURE_17": "Microsoft.Web/sites",
    "CKV_AZURE_212": "Microsoft.Web/sites",
    "CKV_AZURE_213": "Microsoft.Web/sites",
    "CKV_AZURE_109": "Microsoft.KeyVault/vaults",
    "CKV_AZURE_189": "Microsoft.KeyVault/vaults",
    "CKV_AZURE_110": "Microsoft.KeyVault/vaults",
    "CKV_AZURE_42": "Microsoft.KeyVault/vaults",
}


@pytest.fixture(scope="module")
def checkov_report() -> dict[str, Any]:
    checkov = Path(sys.executable).with_name("checkov")
    cmd = [str(checkov) if checkov.exists() else "checkov", "-d", str(INFRA), "--framework", "bicep",
           "--skip-download", "-o", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"checkov produced no JSON (rc={proc.returncode}): {proc.stderr[-2000:]}")
    if isinstance(report, list):  # one entry per framework
        (report,) = [r for r in report if r.get("check_type") == "bicep"]
    return report


def test_checkov_has_no_failures_and_no_parsing_errors(checkov_report: dict[str, Any]) -> None:
    summary = checkov_report["summary"]
    failed = [(c["check_id"], c["resource"], c["file_path"]) for c in checkov_report["results"]["failed_checks"]]
    # checkov exits 0 when a file does not parse; the summary is the only place that says so.
    assert summary["parsing_errors"] == 0, summary
    assert summary["failed"] == 0, failed
    assert summary["passed"] >= 20, summary  # a scan that silently found nothing must not pass
    assert summary["resource_count"] >= 30, summary


def test_checkov_skips_are_inline_justified_and_expected(checkov_report: dict[str, Any]) -> None:
    skipped = checkov_report["results"]["skipped_checks"]
    for check in skipped:
        reason = (check.get("check_result") or {}).get("suppress_comment") or ""
        assert len(reason.strip()) > 20, f"{check['check_id']} on {check['resource']} skipped without a reason"
        assert check["check_id"] in ALLOWED_SKIPS, f"unexpected skip {check['check_id']} on {check['resource']}"
        assert check["resource"].startswith(ALLOWED_SKIPS[check["check_id"]] + "."), check["resource"]
    # A skip that no longer matches a failing check is dead weight; keep the list honest.
    assert {c["check_id"] for c in skipped} == set(ALLOWED_SKIPS)


# --------------------------------------------------------------------------------------------------
# identity and secrets


def test_local_auth_disabled(bicep: dict) -> None:
    account = only(bicep, "Microsoft.CognitiveServices/accounts")
    assert account["properties"]["disableLocalAuth"] is True
    assert account["properties"]["customSubDomainName"], "Entra auth needs a custom subdomain"
    assert only(bicep, "Microsoft.Insights/components")["properties"]["DisableLocalAuth"] is True
    workspace = only(bicep, "Microsoft.OperationalInsights/workspaces")
    assert workspace["properties"]["features"]["disableLocalAuth"] is True


def test_storage_is_identity_only(bicep: dict) -> None:
    props = only(bicep, "Microsoft.Storage/storageAccounts")["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True


def test_no_keys_or_key_connection_strings_anywhere() -> None:
    forbidden = [r"listKeys\s*\(", r"listkeys", r"AccountKey=", r"SharedAccessSignature", r"primaryKey",
                 r"primaryMasterKey", r"@secure\(\)", r"InstrumentationKey="]
    for path in BICEP_FILES:
        text = code(path)
        for pattern in forbidden:
            assert not re.search(pattern, text, re.IGNORECASE), f"{path.name}: {pattern}"
        # The only connection strings allowed are Application Insights' (not a secret; ingestion needs AAD) and the
        # Durable Task Scheduler's, which names an endpoint and the managed identity (checked below), never a key.
        for line in text.splitlines():
            if re.search(r"connectionstring", line, re.IGNORECASE):
                assert re.search(r"APPLICATIONINSIGHTS_CONNECTION_STRING|appInsightsConnectionString|"
                                 r"properties\.ConnectionString|DURABLE_TASK_SCHEDULER_CONNECTION_STRING|"
                                 r"storageProvider__connectionStringName", line), \
                    f"{path.name}: {line.strip()}"


def test_key_vault_uses_rbac(bicep: dict) -> None:
    props = only(bicep, "Microsoft.KeyVault/vaults")["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enableSoftDelete"] is True
    assert "accessPolicies" not in props


# --------------------------------------------------------------------------------------------------
# Function App


FLEX_FORBIDDEN = {
    "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE", "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_NODE_DEFAULT_VERSION", "WEBSITE_USE_PLACEHOLDER",
    "WEBSITE_SKIP_CONTENTSHARE_VALIDATION", "SCM_DO_BUILD_DURING_DEPLOYMENT", "ENABLE_ORYX_BUILD",
    "FUNCTIONS_MAX_HTTP_CONCURRENCY", "FUNCTIONS_WORKER_PROCESS_COUNT", "PYTHON_THREADPOOL_THREAD_COUNT",
    "AzureWebJobsStorage", "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
}
HOST_SETTINGS = {
    "AzureWebJobsStorage__credential", "AzureWebJobsStorage__clientId", "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri", "AzureWebJobsStorage__tableServiceUri",
    "APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
    # durableBackend=DurableTaskScheduler: host.json overrides and the connection they name (read by the host).
    "AzureFunctionsJobHost__extensions__durableTask__storageProvider__type",
    "AzureFunctionsJobHost__extensions__durableTask__storageProvider__connectionStringName",
    "AzureFunctionsJobHost__extensions__durableTask__hubName", "DURABLE_TASK_SCHEDULER_CONNECTION_STRING",
    "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT",
}
LOCAL_ONLY = {"AZURE_OPENAI_API_KEY", "CALL_STORAGE_CONNECTION_STRING"}


def test_every_setting_the_code_requires_in_azure_is_set(bicep: dict) -> None:
    from shared.settings import SETTINGS

    names = set(app_settings(bicep))
    required = {s.name for s in SETTINGS if s.required_in_azure}
    assert required, "shared.settings.SETTINGS declares nothing required in Azure"
    assert not required - names, f"missing app settings: {sorted(required - names)}"
    # Everything Bicep sets is either read by the code or by the Functions host: catches typos.
    known = {s.name for s in SETTINGS} | HOST_SETTINGS
    assert not names - known, f"app settings nobody reads: {sorted(names - known)}"
    assert not names & LOCAL_ONLY, "key-based settings must not be set in Azure"
    assert not names & FLEX_FORBIDDEN, f"Flex Consumption rejects {sorted(names & FLEX_FORBIDDEN)}"


def test_app_settings_values(bicep: dict) -> None:
    settings = app_settings(bicep)
    assert settings["AZURE_OPENAI_AUTH"] == "entra"
    assert settings["AZURE_OPENAI_TOKEN_SCOPE"] == "https://cognitiveservices.azure.com/.default"
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["AzureWebJobsStorage__clientId"] == "identityClientId"
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identityClientId};Authorization=AAD"
    assert (
        settings["WEBHOOK_SECRET"] == "@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${webhookSecretName})"
    )
    assert settings["WEBHOOK_SECRET_PREVIOUS"].startswith("@Microsoft.KeyVault(VaultName=${keyVaultName};")
    assert settings["ROUTING_RULES_PATH"] == "routing.json"
    # The rules blob the postprovision hook fills (main.bicep output) is the one the app reads.
    assert settings["ROUTING_RULES_URI"] == "${blobEndpoint}${rulesContainerName}/routing.json"
    assert bicep["modules/functionapp.bicep"]["outputs"]["routingRulesUri"]["value"] == settings["ROUTING_RULES_URI"]


def test_host_request_body_limit_is_the_webhooks_limit(bicep: dict) -> None:
    from shared.intake import MAX_BODY_BYTES

    settings = app_settings(bicep)
    assert settings["FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"]["function"] == {
        "type": "string", "parameters": {"value_to_convert": "requestBodySizeLimit"}}
    param = bicep["modules/functionapp.bicep"]["parameters"]["requestBodySizeLimit"]
    assert param["default"] == MAX_BODY_BYTES


def test_rotation_setting_is_conditional(bicep: dict) -> None:
    rotation = bicep["modules/functionapp.bicep"]["variables"]["rotationAppSettings"]["value"]
    assert rotation["operator"]["operands"]["condition"] == "webhookSecretPreviousEnabled"
    assert rotation["operator"]["operands"]["false_value"] == []
    assert bicep["main.bicep"]["parameters"]["webhookSecretPreviousEnabled"]["default"] is False


def test_flex_site(bicep: dict) -> None:
    plan = only(bicep, "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    site = only(bicep, "Microsoft.Web/sites")
    assert site["kind"] == "functionapp,linux"
    assert site["identity"]["type"] == "UserAssigned"
    props = site["properties"]
    assert props["httpsOnly"] is True
    assert props["keyVaultReferenceIdentity"] == "identityId"
    fac = props["functionAppConfig"]
    assert fac["runtime"]["name"] == "python"
    main_params = bicep["main.bicep"]["parameters"]
    python = next(d for d in main_params["pythonVersion"]["decorators"] if d["type"] == "allowed")["argument"]
    assert set(python) <= {"3.11", "3.12"} and main_params["pythonVersion"]["default"] in python
    assert fac["deployment"]["storage"]["authentication"]["type"] == "UserAssignedIdentity"
    # always ready for the http group, and HTTP concurrency raised above Python's default of 1
    variables = bicep["modules/functionapp.bicep"]["variables"]
    assert variables["alwaysReadyHttpGroup"]["value"][0]["name"] == "http"
    assert main_params["alwaysReadyHttp"]["default"] >= 1
    assert next(d for d in main_params["alwaysReadyHttp"]["decorators"] if d["type"] == "min_value")["argument"] >= 1
    assert fac["scaleAndConcurrency"]["triggers"]["http"]["perInstanceConcurrency"] == "httpPerInstanceConcurrency"
    assert main_params["httpPerInstanceConcurrency"]["default"] > 1
    assert strings_in(site["tags"]).count("api") == 1 and "'azd-service-name'" in strings_in(site["tags"])
    site_config = props["siteConfig"]
    assert site_config["minTlsVersion"] == "1.2" and site_config["ftpsState"] == "Disabled"


def test_site_update_strategy_is_a_parameter_defaulting_to_recreate(bicep: dict) -> None:
    # Recreate cuts live calls on every deploy (the drain hooks handle that); RollingUpdate lets them finish and
    # needs host.json's Durable version match strategy (tests/infra/test_host_json.py).
    fac = only(bicep, "Microsoft.Web/sites")["properties"]["functionAppConfig"]
    assert fac["siteUpdateStrategy"] == {"type": "siteUpdateStrategy"}
    for doc in (bicep["main.bicep"], bicep["modules/functionapp.bicep"]):
        param = doc["parameters"]["siteUpdateStrategy"]
        assert param["default"] == "Recreate"
        assert next(d for d in param["decorators"] if d["type"] == "allowed")["argument"] == ["Recreate",
                                                                                           "RollingUpdate"]


def test_storage_queue_table_and_container(bicep: dict) -> None:
    main_vars = bicep["main.bicep"]["variables"]
    assert main_vars["callRecordsQueueName"]["value"] == "call-records"
    assert main_vars["callTurnsTableName"]["value"] == "callturns"
    for type_ in ("Microsoft.Storage/storageAccounts/queueServices/queues",
                  "Microsoft.Storage/storageAccounts/tableServices/tables"):
        only(bicep, type_)
    containers = resources_of_type(bicep, "Microsoft.Storage/storageAccounts/blobServices/containers")
    created = {(f, n) for f, n, r in containers if not r["config"].get("existing")}
    assert created == {("modules/storage.bicep", "deploymentContainer"), ("modules/storage.bicep", "rulesContainer")}
    for _, _, r in containers:
        if not r["config"].get("existing"):
            assert body(r)["properties"]["publicAccess"] == "None"
    from shared.settings import SETTINGS

    defaults = {s.name: s.default for s in SETTINGS}
    assert defaults["CALL_RECORDS_QUEUE"] == main_vars["callRecordsQueueName"]["value"]
    assert defaults["CALL_TURNS_TABLE"] == main_vars["callTurnsTableName"]["value"]


# --------------------------------------------------------------------------------------------------
# OpenAI


def test_region_restricted_to_sip_regions(bicep: dict) -> None:
    location = bicep["main.bicep"]["parameters"]["location"]
    allowed = next(d for d in location["decorators"] if d["type"] == "allowed")["argument"]
    assert sorted(allowed) == ["eastus2", "swedencentral"]


def test_model_is_a_parameter(bicep: dict) -> None:
    from shared.model_lifecycle import lookup

    params = bicep["main.bicep"]["parameters"]
    # The newest realtime model the Azure SIP how-to lists, with no announced shutdown (docs/models.md).
    assert params["realtimeModelName"]["default"] == "gpt-realtime-1.5"
    assert params["realtimeModelVersion"]["default"] == "2026-02-23"
    assert params["realtimeDeploymentName"]["default"] == "gpt-realtime-1.5"
    realtime = lookup(params["realtimeModelName"]["default"], params["realtimeModelVersion"]["default"])
    assert realtime is not None and realtime.shutdown is None
    assert params["realtimeSkuName"]["default"] == "GlobalStandard"
    assert params["realtimeCapacity"]["type"] == "int"
    assert params["secondaryModelName"]["default"] == ""  # optional second deployment, off by default
    # The transcription deployment is a parameter too, and routing.json's profiles name it.
    assert params["transcriptionModelName"]["type"] == "string"
    assert params["transcriptionModelVersion"]["type"] == "string"
    rules = json.loads((ROOT / "routing.json").read_text())
    transcription = {p["transcription"]["model"] for p in rules["profiles"].values() if p.get("transcription")}
    assert transcription == {params["transcriptionDeploymentName"]["default"]}
    variables = bicep["modules/openai.bicep"]["variables"]
    assert "transcriptionDeployments" in strings_in(variables["deployments"]["value"])
    (deployment,) = [r for r in bicep["modules/openai.bicep"]["resources"].values()
                     if r["type"] == "Microsoft.CognitiveServices/accounts/deployments"]
    assert {"type": "batchSize", "argument": 1} in deployment["decorators"], "deployments must be serialised"
    model = body(deployment)["properties"]["model"]
    for key in ("name", "version"):
        assert isinstance(model[key], dict), f"deployment model.{key} is a literal, not a parameter"
    # no resource anywhere hard-codes a model name
    for f, doc in bicep.items():
        for name, r in doc["resources"].items():
            assert not any(s.startswith("gpt-") for s in strings_in(r["config"])), f"{f}:{name} hard-codes a model"
    module_params = bicep["main.bicep"]["modules"]["openai"]["config"]["params"]
    assert module_params["realtimeModelName"] == "realtimeModelName"
    assert module_params["realtimeModelVersion"] == "realtimeModelVersion"
    assert module_params["transcriptionModelName"] == "transcriptionModelName"
    app_params = bicep["main.bicep"]["modules"]["functionApp"]["config"]["params"]
    assert app_params["openAiModelName"] == "realtimeModelName"
    assert app_params["openAiModelVersion"] == "realtimeModelVersion"


def test_outputs(bicep: dict) -> None:
    outputs = bicep["main.bicep"]["outputs"]
    for name in ("WEBHOOK_URL", "AZURE_OPENAI_ENDPOINT", "SIP_URI", "AZURE_KEY_VAULT_NAME", "AZURE_KEY_VAULT_URI",
                 "WEBHOOK_SECRET_NAME", "AZURE_FUNCTION_APP_NAME", "AZURE_RESOURCE_GROUP", "ROUTING_RULES_URI"):
        assert name in outputs, name
    openai_outputs = bicep["modules/openai.bicep"]["outputs"]
    assert openai_outputs["sipUri"]["value"] == (
        "sip:proj_${account.properties.internalId}@${location}.sip.ai.azure.com;transport=tls")
    assert openai_outputs["endpoint"]["value"] == "https://${account.properties.customSubDomainName}.openai.azure.com"
    webhook = bicep["modules/functionapp.bicep"]["outputs"]["webhookUrl"]["value"]
    host = json.loads((ROOT / "host.json").read_text())
    prefix = host["extensions"]["http"]["routePrefix"]
    incoming = (ROOT / "call_workflow" / "incoming.py").read_text()
    route = re.search(r'route="([^"]+)"', incoming)
    assert route, "the webhook has no route"
    # ...the route the webhook function actually serves, under the host's route prefix.
    path = "/".join(p for p in (prefix, route.group(1)) if p)
    assert webhook == f"https://${{app.properties.defaultHostName}}/{path}" and path == "api/calls/incoming"


# --------------------------------------------------------------------------------------------------
# RBAC

ROLE_IDS = {
    "storageBlobDataOwner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "storageBlobDataReader": "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
    "storageBlobDataContributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "storageQueueDataContributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "storageTableDataContributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "cognitiveServicesOpenAiUser": "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd",
    "cognitiveServicesUser": "a97b65f3-24c7-4388-baec-2e87135dc908",
    "keyVaultSecretsUser": "4633458b-17de-408a-b874-0445c86b69e6",
    "keyVaultSecretsOfficer": "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
    "monitoringMetricsPublisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}
APP_ROLES = {  # role -> scope resource symbol
    "storageBlobDataOwner": "storage", "storageQueueDataContributor": "storage",
    "storageTableDataContributor": "storage", "cognitiveServicesOpenAiUser": "account",
    "cognitiveServicesUser": "account", "keyVaultSecretsUser": "vault", "monitoringMetricsPublisher": "appInsights",
    "durableTaskDataContributor": "scheduler",  # only deployed with durableBackend=DurableTaskScheduler
    "storageBlobDataReader": "rulesContainer",  # the routing rules blob (ROUTING_RULES_URI)
}
DEPLOYER_ROLES = {"cognitiveServicesUser": "account", "keyVaultSecretsOfficer": "vault",
                  "storageBlobDataContributor": "rulesContainer"}  # publishes routing rules


def _assignments(bicep: dict) -> list[tuple[str, str, str, Any]]:
    """(principal, role variable, scope, condition) for every role assignment."""
    out = []
    for _f, name, r in resources_of_type(bicep, "Microsoft.Authorization/roleAssignments"):
        props = body(r)["properties"]
        role = props["roleDefinitionId"]["function"]["parameters"]["resource_name_1"]
        out.append((props["principalId"], role, body(r)["scope"], r["config"].get("condition")))
        assert body(r)["name"]["function"]["type"] == "guid", f"{name}: non-deterministic assignment name"
    return out


def test_role_definition_ids(bicep: dict) -> None:
    variables = bicep["modules/rbac.bicep"]["variables"]
    for var, guid in ROLE_IDS.items():
        assert variables[var]["value"] == guid, var


def test_app_identity_roles(bicep: dict) -> None:
    got = {(role, scope) for principal, role, scope, _ in _assignments(bicep) if principal == "appPrincipalId"}
    assert got == set(APP_ROLES.items())
    rbac_call = bicep["main.bicep"]["modules"]["rbac"]["config"]["params"]
    # the app identity, not the deployer, receives the app roles
    assert {"identity", "principalId"} <= set(strings_in(rbac_call["appPrincipalId"]))
    assert rbac_call["deployerPrincipalId"] == "principalId"


def test_deployer_roles(bicep: dict) -> None:
    got = {(role, scope) for principal, role, scope, cond in _assignments(bicep) if principal == "deployerPrincipalId"}
    assert got == set(DEPLOYER_ROLES.items())
    for principal, _, _, cond in _assignments(bicep):
        if principal == "deployerPrincipalId":
            assert "deployerPrincipalId" in strings_in(cond), "deployer assignments must be skipped without principalId"


# --------------------------------------------------------------------------------------------------
# wiring between files


def test_module_calls_match_module_parameters(bicep: dict) -> None:
    """What `bicep build` would catch: unknown params and missing required params on module calls."""
    for f, doc in bicep.items():
        for name, module in doc.get("modules", {}).items():
            target = str((Path(f).parent / module["detail"]["path"]).as_posix())
            declared = bicep[target]["parameters"]
            passed = set(body(module)["params"])
            assert not passed - set(declared), f"{f}:{name} passes unknown {sorted(passed - set(declared))}"
            required = {p for p, d in declared.items() if d.get("default") is None}
            assert not required - passed, f"{f}:{name} misses required {sorted(required - passed)}"


def test_parameters_file_matches_main(bicep: dict) -> None:
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = bicep["main.bicep"]["parameters"]
    assert not set(params) - set(declared), sorted(set(params) - set(declared))
    required = {p for p, d in declared.items() if d.get("default") is None}
    assert required <= set(params), sorted(required - set(params))
    assert params["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"
    assert params["location"]["value"] == "${AZURE_LOCATION}"
    for name, entry in params.items():
        assert re.fullmatch(r"\$\{[A-Z_]+(=[^}]*)?\}", entry["value"]), f"{name}: azd substitution expected"


def test_azure_yaml() -> None:
    import yaml

    doc = yaml.safe_load((ROOT / "azure.yaml").read_text())
    assert doc["services"]["api"] == {"project": ".", "language": "python", "host": "function"}
    assert doc["infra"]["path"] == "infra"
    assert doc["requiredVersions"]["azd"] == ">= 1.18.0"  # the first azd that honours .funcignore
    # Every hook goes through the interpreter-picking wrapper (never a bare `python`, which stock macOS and
    # Debian/Ubuntu lack), and every script it names exists.
    expected = {"postprovision": "scripts/register_webhook.py", "predeploy": "scripts/drain.py predeploy",
                "postdeploy": "scripts/drain.py postdeploy"}
    assert set(doc["hooks"]) == set(expected)
    for name, command in expected.items():
        hook = doc["hooks"][name]
        assert hook["posix"]["run"] == f"sh scripts/hook.sh {command}"
        assert hook["windows"]["run"] == f"pwsh -NoProfile -File scripts/hook.ps1 {command}"
        assert all(hook[p]["continueOnError"] is False for p in ("posix", "windows"))
        assert (ROOT / command.split()[0]).is_file()


def test_durable_task_scheduler_is_an_option_wired_through_app_settings(bicep: dict) -> None:
    main = bicep["main.bicep"]
    backend = main["parameters"]["durableBackend"]
    assert backend["default"] == "AzureStorage"
    assert sorted(strings_in(backend["decorators"])).count("DurableTaskScheduler") == 1
    module = main["modules"]["durableTaskScheduler"]
    assert module["detail"]["path"] == "modules/durabletask.bicep"
    assert module["config"]["condition"] == "useDurableTaskScheduler"

    dts = bicep["modules/durabletask.bicep"]
    scheduler = only({"d": dts}, "Microsoft.DurableTask/schedulers")
    assert "ipAllowlist" in scheduler["properties"] and scheduler["properties"]["ipAllowlist"]
    assert len(resources_of_type({"d": dts}, "Microsoft.DurableTask/schedulers/taskHubs")) == 1
    role = only({"d": dts}, "Microsoft.Authorization/roleAssignments")
    assert "durableTaskDataContributor" in strings_in(role)
    assert dts["variables"]["durableTaskDataContributor"]["value"] == "0ad04412-c4d5-4796-b79c-f76d14c8d402"

    text = code(INFRA / "modules" / "functionapp.bicep")
    # host.json is shared by both backends: the switch reaches it as host.json overrides in app settings.
    for name, value in [("AzureFunctionsJobHost__extensions__durableTask__storageProvider__type", "azureManaged"),
                        ("AzureFunctionsJobHost__extensions__durableTask__storageProvider__connectionStringName",
                         "DURABLE_TASK_SCHEDULER_CONNECTION_STRING")]:
        assert re.search(rf"name: '{name}'\s*value: '{value}'", text), name
    assert re.search(r"Endpoint=\$\{durableTaskSchedulerEndpoint\};Authentication=ManagedIdentity;"
                     r"ClientID=\$\{identityClientId\}", text)
    assert "empty(durableTaskSchedulerEndpoint) ? [] :" in text  # Azure Storage: no override at all


def test_call_length_cap_in_bicep_stays_under_the_settings_cap(bicep: dict) -> None:
    from shared.settings import MAX_CALL_DURATION_CAP_SECONDS

    param = bicep["main.bicep"]["parameters"]["maxCallDurationSeconds"]
    caps = [d for d in param["decorators"] if d.get("type") == "max_value"]
    assert caps and int(caps[0]["argument"]) <= min(1800, MAX_CALL_DURATION_CAP_SECONDS)


# --------------------------------------------------------------------------------------------------
# observability: workbook and alerts (docs/observability.md)


def _kql_names(text: str) -> set[str]:
    return set(re.findall(r'name == \\?"([a-z_.:]+)\\?"', text))


def test_workbook_shows_the_five_views_on_names_the_app_exports(bicep: dict) -> None:
    doc = bicep["modules/monitoring.bicep"]
    workbook = only(bicep, "Microsoft.Insights/workbooks")
    assert workbook["kind"] == "shared" and workbook["properties"]["category"] == "workbook"
    assert workbook["properties"]["serializedData"]["function"]["parameters"]["value_to_convert"] == "workbookContent"
    items = doc["variables"]["workbookItems"]["value"]
    titles = [i["title"] for i in items]
    assert [t.split(" ")[0] for t in titles] == ["Calls", "Greeting", "Tool", "Rejects", "Live"]
    queries = {i["title"]: doc["variables"][i["query"]]["value"] for i in items}
    assert "record.outcome" in queries[titles[0]] and "bin(timestamp, 1h)" in queries[titles[0]]
    assert "percentile(greeting_ms, 50)" in queries[titles[1]] and "percentile(greeting_ms, 95)" in queries[titles[1]]
    # Every span and metric name the KQL reads is one the app really emits (a rename would blank the workbook).
    source = (ROOT / "shared" / "telemetry.py").read_text()
    names = set().union(*(_kql_names(q) for q in queries.values()))
    assert names == {"record.publish", "switchboard.tool.latency", "switchboard.calls.decided",
                     "switchboard.calls.live"}
    assert all(f'"{n}"' in source for n in names)
    for key in ("record.outcome", "record.greeting_ms", "call.id"):
        assert key in source


def test_two_alerts_with_threshold_parameters_passed_from_main(bicep: dict) -> None:
    rules = {name: body(r) for _, name, r in resources_of_type(bicep, "Microsoft.Insights/scheduledQueryRules")}
    assert set(rules) == {"greetingAlert", "failedCallsAlert"}
    thresholds = {name: r["properties"]["criteria"]["allOf"][0]["threshold"] for name, r in rules.items()}
    assert thresholds == {"greetingAlert": "greetingP95ThresholdMs", "failedCallsAlert": "failedCallPercentThreshold"}
    module_params = bicep["modules/monitoring.bicep"]["parameters"]
    main_params = bicep["main.bicep"]["parameters"]
    passed = bicep["main.bicep"]["modules"]["monitoring"]["config"]["params"]
    for param in thresholds.values():
        assert module_params[param]["type"] == "int" and main_params[param]["type"] == "int"
        assert passed[param] == param
    greeting = rules["greetingAlert"]["properties"]["criteria"]["allOf"][0]
    assert "record.greeting_ms" in greeting["query"] and greeting["metricMeasureColumn"] == "p95"
    failed = rules["failedCallsAlert"]["properties"]["criteria"]["allOf"][0]
    assert "switchboard.calls.ended" in failed["query"] and failed["metricMeasureColumn"] == "failed_percent"
    # Declined calls are not failures: the ratio is over answered calls.
    assert '!in ("rejected", "referred")' in failed["query"]
    assert '"switchboard.calls.ended"' in (ROOT / "shared" / "telemetry.py").read_text()
