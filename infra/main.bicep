// Switchboard: Azure Functions (Flex Consumption, Python) answering phone calls with
// Azure OpenAI GPT Realtime over SIP. Deployed by `azd up` or `az deployment sub create`.
//
// Keep this file (and modules/*) inside the syntax pycep-parser 0.5.1 reads: no deployer(),
// lambdas, import/func, nullable types (string?) or object spread. tests/infra enforces it,
// because checkov silently skips a file it cannot parse.
targetScope = 'subscription'

@description('Alert when the p95 greeting latency (accept to first response audio) over 30 min is above this many ms.')
@minValue(100)
param greetingP95ThresholdMs int = 2500

@description('Alert when this percentage (or more) of the answered calls ending in an hour failed.')
@minValue(1)
@maxValue(100)
param failedCallPercentThreshold int = 10

@description('Action group (resource id) the two alerts notify; empty = portal only.')
param alertActionGroupId string = ''

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; seeds resource names and the azd-env-name tag.')
param environmentName string

@description('Region of every resource. Realtime over SIP is only offered in eastus2 and swedencentral, and the SIP URI is region-specific.')
@allowed([
  'eastus2'
  'swedencentral'
])
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the deploying user or CI principal; gets Cognitive Services User and Key Vault Secrets Officer so the post-provision hook can register the webhook and store its secret. Empty = no assignment.')
param principalId string = ''

@description('Type of principalId.')
@allowed([
  'User'
  'ServicePrincipal'
])
param principalType string = 'User'

@description('Kind of the Cognitive Services account. Both expose https://<subdomain>.openai.azure.com.')
@allowed([
  'AIServices'
  'OpenAI'
])
param openAiAccountKind string = 'AIServices'

// The models are parameters, never literals in a resource: models get announced shutdown dates
// (docs/models.md), so switching model must be a parameter change. Defaults: the newest realtime
// model the Azure SIP how-to lists.
@description('Realtime model to deploy (sent by the app as `model` on accept via the deployment name).')
param realtimeModelName string = 'gpt-realtime-1.5'

@description('Version of realtimeModelName.')
param realtimeModelVersion string = '2026-02-23'

@description('Deployment name the app uses (AZURE_OPENAI_DEPLOYMENT).')
param realtimeDeploymentName string = 'gpt-realtime-1.5'

@description('Deployment SKU. gpt-realtime is offered as GlobalStandard in the SIP regions.')
param realtimeSkuName string = 'GlobalStandard'

@description('Deployment capacity (quota units); must fit the subscription quota for the model in the region.')
@minValue(1)
param realtimeCapacity int = 10

@description('Optional second realtime model (for example gpt-realtime-mini) deployed beside the first; empty = none.')
param secondaryModelName string = ''

@description('Version of secondaryModelName (gpt-realtime-mini: 2025-10-06).')
param secondaryModelVersion string = '2025-10-06'

@description('Deployment name of the second model; defaults to the model name.')
param secondaryDeploymentName string = ''

@description('Capacity of the second deployment.')
@minValue(1)
param secondaryCapacity int = 10

// On Azure a profile's `transcription.model` (routing.json) names a deployment, not a model: this one.
@description('Transcription model for the profiles\' input audio transcription; empty = no transcription deployment.')
param transcriptionModelName string = 'gpt-4o-mini-transcribe'

@description('Version of transcriptionModelName.')
param transcriptionModelVersion string = '2025-12-15'

@description('Deployment name of the transcription model: what routing.json profiles put in `transcription.model`.')
param transcriptionDeploymentName string = 'gpt-4o-mini-transcribe'

@description('Capacity of the transcription deployment.')
@minValue(1)
param transcriptionCapacity int = 10

// Post-call analysis (docs/analysis.md): a chat model the app calls after each call whose profile has an
// `analysis` block. Empty = no deployment, and AZURE_OPENAI_ANALYSIS_DEPLOYMENT is empty: analysis is off.
@description('Chat model for post-call analysis (structured outputs), e.g. gpt-4.1-mini; empty = analysis off.')
param analysisModelName string = ''

@description('Version of analysisModelName (gpt-4.1-mini: 2025-04-14).')
param analysisModelVersion string = ''

@description('Deployment name of the analysis model; empty = the model name.')
param analysisDeploymentName string = ''

@description('Capacity of the analysis deployment (thousands of tokens per minute).')
@minValue(1)
param analysisCapacity int = 10

var analysisDeployment = empty(analysisModelName) ? '' : (empty(analysisDeploymentName) ? analysisModelName : analysisDeploymentName)

@description('Python version of the Flex Consumption runtime.')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Instance memory of the Flex plan (2048 MB = 1 vCPU).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Upper bound of Flex instances (cost guard-rail).')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Always-ready instances for the http group, so the webhook never waits for a cold start.')
@minValue(1)
param alwaysReadyHttp int = 1

@description('Always-ready instances for the durable group (orchestrator + converse activity), so the first call after an idle period does not wait for a cold start before the greeting. 0 saves the baseline cost.')
@minValue(0)
param alwaysReadyDurable int = 1

@description('Concurrent HTTP requests per instance. Python defaults to 1, which would start an instance per concurrent webhook; the handlers are async.')
@minValue(1)
@maxValue(1000)
param httpPerInstanceConcurrency int = 16

@description('Default call duration cap (MAX_CALL_DURATION_SECONDS). Azure closes realtime sessions after 30 minutes, so more than 1800 buys nothing.')
@minValue(10)
@maxValue(1800)
param maxCallDurationSeconds int = 900

@description('How deploys and setting changes replace running instances (functionAppConfig.siteUpdateStrategy). Recreate (default) restarts every instance and cuts live calls: deploy through the drain hooks (docs/deploy.md). RollingUpdate (preview) lets running executions finish; host.json pins the Durable orchestration version match strategy it needs.')
@allowed([
  'Recreate'
  'RollingUpdate'
])
param siteUpdateStrategy string = 'Recreate'

@description('Durable Functions backend. AzureStorage: the default provider, queues polled with back-off (up to host.json maxQueuePollingInterval per hop). DurableTaskScheduler: Azure-managed, work pushed over gRPC, the low-latency choice for the greeting (docs/deploy.md).')
@allowed([
  'AzureStorage'
  'DurableTaskScheduler'
])
param durableBackend string = 'AzureStorage'

@description('Durable Task Scheduler SKU when durableBackend is DurableTaskScheduler.')
@allowed([
  'Consumption'
  'Dedicated'
])
param durableTaskSchedulerSku string = 'Consumption'

@description('Days finished orchestrations are kept before the daily purge (HISTORY_RETENTION_DAYS).')
@minValue(1)
@maxValue(3650)
param historyRetentionDays int = 30

@description('Client id of the operator console\'s Entra ID app registration; empty: the console takes the function key (docs/console.md).')
param consoleEntraClientId string = ''

@description('App role whose members may hang up and transfer calls from the operator console.')
param consoleOperatorRole string = 'Switchboard.Operator'

@description('Key Vault secret holding the webhook signing secret (written by scripts/register_webhook.py).')
param webhookSecretName string = 'webhook-secret'

@description('Set during a secret rotation: adds WEBHOOK_SECRET_PREVIOUS as a Key Vault reference to webhookSecretPreviousName. Only enable once that secret exists (see docs/deploy.md).')
param webhookSecretPreviousEnabled bool = false

@description('Key Vault secret holding the previous webhook signing secret during a rotation.')
param webhookSecretPreviousName string = 'webhook-secret-previous'

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var callRecordsQueueName = 'call-records'
var callTurnsTableName = 'callturns'
var deploymentContainerName = 'app-package-${resourceToken}'
var openAiAccountName = 'oai-${resourceToken}'
var functionAppName = 'func-${resourceToken}'
var rulesContainerName = 'routing-rules'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    appInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
    greetingP95ThresholdMs: greetingP95ThresholdMs
    failedCallPercentThreshold: failedCallPercentThreshold
    alertActionGroupId: alertActionGroupId
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    callRecordsQueueName: callRecordsQueueName
    callTurnsTableName: callTurnsTableName
    rulesContainerName: rulesContainerName
  }
}

module openai 'modules/openai.bicep' = {
  name: 'openai'
  scope: rg
  params: {
    name: openAiAccountName
    location: location
    tags: tags
    kind: openAiAccountKind
    realtimeDeploymentName: realtimeDeploymentName
    realtimeModelName: realtimeModelName
    realtimeModelVersion: realtimeModelVersion
    realtimeSkuName: realtimeSkuName
    realtimeCapacity: realtimeCapacity
    secondaryModelName: secondaryModelName
    secondaryModelVersion: secondaryModelVersion
    secondaryDeploymentName: empty(secondaryDeploymentName) ? secondaryModelName : secondaryDeploymentName
    secondaryCapacity: secondaryCapacity
    transcriptionModelName: transcriptionModelName
    transcriptionModelVersion: transcriptionModelVersion
    transcriptionDeploymentName: transcriptionDeploymentName
    transcriptionCapacity: transcriptionCapacity
    analysisModelName: analysisModelName
    analysisModelVersion: analysisModelVersion
    analysisDeploymentName: analysisDeployment
    analysisCapacity: analysisCapacity
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
  }
}

// host.json's hubName; the scheduler's task hub gets the same name.
var durableTaskHubName = 'switchboard'
var useDurableTaskScheduler = durableBackend == 'DurableTaskScheduler'

module durableTaskScheduler 'modules/durabletask.bicep' = if (useDurableTaskScheduler) {
  name: 'durabletask'
  scope: rg
  params: {
    name: 'dts-${resourceToken}'
    location: location
    tags: tags
    taskHubName: durableTaskHubName
    appPrincipalId: identity.outputs.principalId
    skuName: durableTaskSchedulerSku
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    planName: 'plan-${resourceToken}'
    appName: functionAppName
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    openAiEndpoint: openai.outputs.endpoint
    openAiDeploymentName: realtimeDeploymentName
    openAiModelName: realtimeModelName
    openAiModelVersion: realtimeModelVersion
    openAiAnalysisDeploymentName: analysisDeployment
    keyVaultName: keyVault.outputs.name
    webhookSecretName: webhookSecretName
    webhookSecretPreviousEnabled: webhookSecretPreviousEnabled
    webhookSecretPreviousName: webhookSecretPreviousName
    callRecordsQueueName: callRecordsQueueName
    callTurnsTableName: callTurnsTableName
    rulesContainerName: storage.outputs.rulesContainerName
    maxCallDurationSeconds: maxCallDurationSeconds
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    alwaysReadyHttp: alwaysReadyHttp
    alwaysReadyDurable: alwaysReadyDurable
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    siteUpdateStrategy: siteUpdateStrategy
    historyRetentionDays: historyRetentionDays
    consoleEntraClientId: consoleEntraClientId
    consoleOperatorRole: consoleOperatorRole
    durableTaskSchedulerEndpoint: useDurableTaskScheduler ? durableTaskScheduler.outputs.endpoint : ''
    durableTaskHubName: durableTaskHubName
  }
}

module rbac 'modules/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    appPrincipalId: identity.outputs.principalId
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
    storageAccountName: storage.outputs.name
    rulesContainerName: storage.outputs.rulesContainerName
    openAiAccountName: openai.outputs.name
    keyVaultName: keyVault.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
  }
}

// Read by azd (written to .azure/<env>/.env) and by scripts/register_webhook.py in the postprovision hook.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_OPENAI_ENDPOINT string = openai.outputs.endpoint
output AZURE_OPENAI_DEPLOYMENT string = realtimeDeploymentName
output AZURE_OPENAI_ACCOUNT_NAME string = openai.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_URI string = keyVault.outputs.uri
output WEBHOOK_SECRET_NAME string = webhookSecretName
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output CONSOLE_URL string = functionApp.outputs.consoleUrl
output SERVICE_API_NAME string = functionApp.outputs.name
output WEBHOOK_URL string = functionApp.outputs.webhookUrl
// The rules blob: the postprovision hook uploads routing.json there once; scripts/publish_rules.py publishes changes.
output ROUTING_RULES_URI string = functionApp.outputs.routingRulesUri
output SIP_URI string = openai.outputs.sipUri
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.appInsightsConnectionString
output DURABLE_BACKEND string = durableBackend
output DURABLE_TASK_SCHEDULER_ENDPOINT string = useDurableTaskScheduler ? durableTaskScheduler.outputs.endpoint : ''
