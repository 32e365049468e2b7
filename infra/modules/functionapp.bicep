// Flex Consumption plan + Python Function App. Every identity-based connection uses the
// user-assigned identity; the app never holds a key or a connection string with a key.
param planName string
param appName string
param location string
param tags object

param identityId string
param identityClientId string
param storageAccountName string
param deploymentContainerName string
param appInsightsConnectionString string
param openAiEndpoint string
param openAiDeploymentName string
param openAiModelName string
param openAiModelVersion string
@description('Chat deployment for post-call analysis; empty = analysis off.')
param openAiAnalysisDeploymentName string = ''
param keyVaultName string
param webhookSecretName string
param webhookSecretPreviousEnabled bool = false
param webhookSecretPreviousName string = 'webhook-secret-previous'
param callRecordsQueueName string
param callTurnsTableName string
@description('Blob container of the routing rules; the app reads routing.json there (ROUTING_RULES_URI).')
param rulesContainerName string
param maxCallDurationSeconds int
@description('Largest request body the Functions host accepts, in bytes (FUNCTIONS_REQUEST_BODY_SIZE_LIMIT).')
@minValue(4096)
param requestBodySizeLimit int = 262144

@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'
param instanceMemoryMB int = 2048
param maximumInstanceCount int = 100
param alwaysReadyHttp int = 1
param alwaysReadyDurable int = 1
param httpPerInstanceConcurrency int = 16
// Recreate: a deploy or setting change restarts every instance and force-terminates running executions (live
// calls); RollingUpdate (preview) drains instances in batches and lets executions finish. docs/deploy.md.
@allowed([
  'Recreate'
  'RollingUpdate'
])
param siteUpdateStrategy string = 'Recreate'
param historyRetentionDays int = 30
@description('Client id (GUID) of the operator console\'s Entra ID app registration (a single-page-application redirect URI https://<app>/console, and the app role below). Empty: the console takes the function key. Set: the app validates Entra access tokens itself, since Easy Auth is not supported on Flex Consumption (docs/console.md).')
param consoleEntraClientId string = ''
@description('App role whose members may hang up and transfer calls from the operator console; others may only look.')
param consoleOperatorRole string = 'Switchboard.Operator'
// Empty: the Azure Storage provider (host.json as shipped). Set: the Durable Task Scheduler at this endpoint.
param durableTaskSchedulerEndpoint string = ''
param durableTaskHubName string = 'switchboard'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

var blobEndpoint = storage.properties.primaryEndpoints.blob
var queueEndpoint = storage.properties.primaryEndpoints.queue
var tableEndpoint = storage.properties.primaryEndpoints.table

// Every setting shared/settings.py reads in Azure (docs/architecture.md), plus the host's own
// identity-based storage and telemetry settings. Deliberately absent:
//  - Flex-forbidden settings (FUNCTIONS_WORKER_RUNTIME, FUNCTIONS_EXTENSION_VERSION,
//    WEBSITE_RUN_FROM_PACKAGE, WEBSITE_CONTENTSHARE, WEBSITE_CONTENTAZUREFILECONNECTIONSTRING, ...):
//    the runtime comes from functionAppConfig.
//  - AZURE_OPENAI_API_KEY and CALL_STORAGE_CONNECTION_STRING: local-only alternatives to Entra.
var baseAppSettings = [
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: identityClientId
  }
  {
    name: 'AzureWebJobsStorage__blobServiceUri'
    value: blobEndpoint
  }
  {
    name: 'AzureWebJobsStorage__queueServiceUri'
    value: queueEndpoint
  }
  {
    name: 'AzureWebJobsStorage__tableServiceUri'
    value: tableEndpoint
  }
  {
    // Not a secret; ingestion additionally requires the AAD token below (local auth is off).
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: appInsightsConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${identityClientId};Authorization=AAD'
  }
  {
    name: 'AZURE_OPENAI_ENDPOINT'
    value: openAiEndpoint
  }
  {
    name: 'AZURE_OPENAI_DEPLOYMENT'
    value: openAiDeploymentName
  }
  {
    // The model behind the deployment, for the start-up check of announced shutdown dates (docs/models.md).
    name: 'AZURE_OPENAI_MODEL'
    value: openAiModelName
  }
  {
    name: 'AZURE_OPENAI_MODEL_VERSION'
    value: openAiModelVersion
  }
  {
    // Post-call analysis (docs/analysis.md); empty turns it off.
    name: 'AZURE_OPENAI_ANALYSIS_DEPLOYMENT'
    value: openAiAnalysisDeploymentName
  }
  {
    name: 'AZURE_OPENAI_AUTH'
    value: 'entra'
  }
  {
    name: 'AZURE_OPENAI_TOKEN_SCOPE'
    value: 'https://cognitiveservices.azure.com/.default'
  }
  {
    // Makes the app's credential the user-assigned identity (ManagedIdentityCredential).
    name: 'AZURE_CLIENT_ID'
    value: identityClientId
  }
  {
    // Resolved by the platform with keyVaultReferenceIdentity at app start. Until the
    // post-provision hook has stored the secret the platform passes the unresolved reference
    // text through, which is not a whsec_ secret, so the webhook fails closed.
    name: 'WEBHOOK_SECRET'
    value: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${webhookSecretName})'
  }
  {
    name: 'ROUTING_RULES_PATH'
    value: 'routing.json'
  }
  {
    // Rules from storage, reloaded without a restart (docs/routing.md); ROUTING_RULES_PATH is the fallback.
    name: 'ROUTING_RULES_URI'
    value: '${blobEndpoint}${rulesContainerName}/routing.json'
  }
  {
    name: 'MAX_CALL_DURATION_SECONDS'
    value: string(maxCallDurationSeconds)
  }
  {
    name: 'CALL_STORAGE_QUEUE_URI'
    value: queueEndpoint
  }
  {
    name: 'CALL_STORAGE_TABLE_URI'
    value: tableEndpoint
  }
  {
    name: 'CALL_RECORDS_QUEUE'
    value: callRecordsQueueName
  }
  {
    name: 'CALL_TURNS_TABLE'
    value: callTurnsTableName
  }
  {
    // The host refuses bigger request bodies (413) before they reach the Python worker; its default
    // is 100 MB. Our largest legitimate body is a webhook event of a few KiB, and the intake refuses
    // anything over 256 KiB anyway (docs/deploy.md, "Request body limit").
    name: 'FUNCTIONS_REQUEST_BODY_SIZE_LIMIT'
    value: string(requestBodySizeLimit)
  }
]

var historyAppSettings = [
  {
    name: 'HISTORY_RETENTION_DAYS'
    value: string(historyRetentionDays)
  }
]

// The operator console (docs/console.md): Entra sign-in when an app registration is given, else the function key.
var consoleAppSettings = empty(consoleEntraClientId) ? [] : [
  {
    name: 'CONSOLE_AUTH'
    value: 'entra'
  }
  {
    name: 'CONSOLE_ENTRA_TENANT_ID'
    value: tenant().tenantId
  }
  {
    name: 'CONSOLE_ENTRA_CLIENT_ID'
    value: consoleEntraClientId
  }
  {
    name: 'CONSOLE_OPERATOR_ROLE'
    value: consoleOperatorRole
  }
]

// host.json is one file for both backends; app settings override its values
// (AzureFunctionsJobHost__<path>, docs/deploy.md "Durable backend"). With the scheduler, the storage provider
// becomes azureManaged, reached with the user-assigned identity (no key in the connection string).
var durableTaskSchedulerAppSettings = empty(durableTaskSchedulerEndpoint) ? [] : [
  {
    name: 'AzureFunctionsJobHost__extensions__durableTask__storageProvider__type'
    value: 'azureManaged'
  }
  {
    name: 'AzureFunctionsJobHost__extensions__durableTask__storageProvider__connectionStringName'
    value: 'DURABLE_TASK_SCHEDULER_CONNECTION_STRING'
  }
  {
    name: 'AzureFunctionsJobHost__extensions__durableTask__hubName'
    value: durableTaskHubName
  }
  {
    name: 'DURABLE_TASK_SCHEDULER_CONNECTION_STRING'
    value: 'Endpoint=${durableTaskSchedulerEndpoint};Authentication=ManagedIdentity;ClientID=${identityClientId}'
  }
]

// Only during a rotation: a reference to a secret that does not exist would hand the app the
// raw reference text as a second secret.
var rotationAppSettings = webhookSecretPreviousEnabled ? [
  {
    name: 'WEBHOOK_SECRET_PREVIOUS'
    value: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${webhookSecretPreviousName})'
  }
] : []

// The http group always has a warm instance (the webhook must answer fast, and a cold Python
// start can take seconds); the durable group (orchestrator + converse activity) optionally too,
// so the greeting does not wait for a cold start either.
var alwaysReadyHttpGroup = [
  {
    name: 'http'
    instanceCount: alwaysReadyHttp
  }
]
var alwaysReadyDurableGroup = alwaysReadyDurable > 0 ? [
  {
    name: 'durable'
    instanceCount: alwaysReadyDurable
  }
] : []

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy on Flex needs at least two always-ready instances per group, doubling the idle baseline; enable it for production in a zone-redundant region
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: Azure OpenAI delivers the realtime.call.incoming webhook from the internet; the endpoint authenticates every request by its Standard Webhooks signature
  // checkov:skip=CKV_AZURE_17: the webhook caller (Azure OpenAI) presents no client certificate; requests are authenticated by signature instead
  // checkov:skip=CKV_AZURE_212: Flex Consumption has no numberOfWorkers; warm capacity is set per scale group with alwaysReady below
  // checkov:skip=CKV_AZURE_213: App Service health check is not part of Flex Consumption's instance management and the app exposes only webhook/operator routes, no health endpoint
  name: appName
  location: location
  // azd deploy finds the app by this tag (azure.yaml service "api").
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
        alwaysReady: concat(alwaysReadyHttpGroup, alwaysReadyDurableGroup)
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
      siteUpdateStrategy: {
        type: siteUpdateStrategy
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: concat(baseAppSettings, rotationAppSettings, historyAppSettings, durableTaskSchedulerAppSettings,
        consoleAppSettings)
    }
  }
}

output name string = app.name
output defaultHostName string = app.properties.defaultHostName
// host.json keeps the default "api" route prefix; the webhook function's route is calls/incoming.
output webhookUrl string = 'https://${app.properties.defaultHostName}/api/calls/incoming'
output consoleUrl string = 'https://${app.properties.defaultHostName}/console'
output routingRulesUri string = '${blobEndpoint}${rulesContainerName}/routing.json'
