// Azure OpenAI (Cognitive Services) account with the realtime and transcription deployments. Keyless:
// disableLocalAuth, so the app and the webhook registration use Entra tokens only.
param name string
param location string
param tags object

@allowed([
  'AIServices'
  'OpenAI'
])
param kind string = 'AIServices'

param realtimeDeploymentName string
param realtimeModelName string
param realtimeModelVersion string
param realtimeSkuName string
param realtimeCapacity int

@description('Empty = no second deployment.')
param secondaryModelName string = ''
param secondaryModelVersion string = ''
param secondaryDeploymentName string = ''
param secondaryCapacity int = 10

@description('Empty = no transcription deployment.')
param transcriptionModelName string = ''
param transcriptionModelVersion string = ''
param transcriptionDeploymentName string = ''
param transcriptionCapacity int = 10

var primaryDeployments = [
  {
    name: realtimeDeploymentName
    model: realtimeModelName
    version: realtimeModelVersion
    skuName: realtimeSkuName
    capacity: realtimeCapacity
  }
]
// The second deployment reuses the primary SKU: the realtime models are GlobalStandard-only in
// the SIP regions.
var secondaryDeployments = empty(secondaryModelName) ? [] : [
  {
    name: secondaryDeploymentName
    model: secondaryModelName
    version: secondaryModelVersion
    skuName: realtimeSkuName
    capacity: secondaryCapacity
  }
]
// The transcription model is GlobalStandard in the SIP regions as well.
var transcriptionDeployments = empty(transcriptionModelName) ? [] : [
  {
    name: transcriptionDeploymentName
    model: transcriptionModelName
    version: transcriptionModelVersion
    skuName: realtimeSkuName
    capacity: transcriptionCapacity
  }
]
@description('Empty = no analysis deployment (post-call analysis off).')
param analysisModelName string = ''
param analysisModelVersion string = ''
param analysisDeploymentName string = ''
param analysisCapacity int = 10

// The post-call analysis chat model (docs/analysis.md), GlobalStandard like the others.
var analysisDeployments = empty(analysisModelName) ? [] : [
  {
    name: analysisDeploymentName
    model: analysisModelName
    version: analysisModelVersion
    skuName: realtimeSkuName
    capacity: analysisCapacity
  }
]
var deployments = concat(primaryDeployments, secondaryDeployments, transcriptionDeployments, analysisDeployments)

resource account 'Microsoft.CognitiveServices/accounts@2025-06-01' = {
  // checkov:skip=CKV_AZURE_134: the Flex app (no VNet in this template) calls the accept/refer/hangup REST API and the sideband WebSocket over the public endpoint; access needs an Entra token (local auth is off)
  name: name
  location: location
  tags: tags
  kind: kind
  sku: {
    name: 'S0'
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    // Gives the https://<name>.openai.azure.com host; required for Entra auth.
    customSubDomainName: name
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
    }
  }
}

// Deployments on one account must be created one at a time (concurrent PUTs fail), hence batchSize(1).
@batchSize(1)
resource deployment 'Microsoft.CognitiveServices/accounts/deployments@2025-06-01' = [for d in deployments: {
  parent: account
  name: d.name
  sku: {
    name: d.skuName
    capacity: d.capacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: d.model
      version: d.version
    }
    versionUpgradeOption: 'OnceCurrentVersionExpired'
    raiPolicyName: 'Microsoft.DefaultV2'
  }
}]

output name string = account.name
// The app and the webhook API use the OpenAI host of the custom subdomain for either account kind.
output endpoint string = 'https://${account.properties.customSubDomainName}.openai.azure.com'
// What the SIP trunk provider dials: the project id is proj_<internalId of the account>.
output sipUri string = 'sip:proj_${account.properties.internalId}@${location}.sip.ai.azure.com;transport=tls'
