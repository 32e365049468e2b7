// Storage account used by the Functions host (AzureWebJobsStorage, Durable Functions task hub:
// blobs, queues, tables), the Flex deployment package container, the call-records queue and the
// call-turns table. Identity-only: shared keys are off, so no connection string exists.
param name string
param location string
param tags object
param deploymentContainerName string
param callRecordsQueueName string
param callTurnsTableName string
param rulesContainerName string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: the Flex app has no VNet integration in this template, so the host reaches storage over the public endpoint (identity-only, shared keys off)
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35; access still requires an Entra token
  // checkov:skip=CKV_AZURE_206: holds transient call state and the deployment package; LRS keeps cost down and nothing here needs geo-replication
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    isLocalUserEnabled: false
    isSftpEnabled: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

// Flex Consumption deploys by zipping the app into this container; the app mounts it at start.
resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Routing rules (ROUTING_RULES_URI): published with scripts/publish_rules.py and reloaded by the app without a
// restart (docs/routing.md). Blob versions come from the blob service's soft delete above (7 days).
resource rulesContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: rulesContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource callRecordsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: callRecordsQueueName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource callTurnsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: callTurnsTableName
}

output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
output rulesContainerName string = rulesContainer.name
