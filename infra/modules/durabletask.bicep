// Durable Task Scheduler (durableBackend = 'DurableTaskScheduler'): an Azure-managed Durable backend that pushes
// work items to the app over gRPC instead of the Azure Storage provider's polled queues, so the start -> orchestrator
// -> converse hops do not wait for a backed-off poller (docs/deploy.md, "Durable backend").
// The app reaches it with its user-assigned identity; the role below is the only permission it needs.
param name string
param location string
param tags object
param taskHubName string
param appPrincipalId string

@description('Consumption (pay per action) or Dedicated (reserved capacity units).')
@allowed([
  'Consumption'
  'Dedicated'
])
param skuName string = 'Consumption'

// Durable Task Data Contributor (built-in role): start, query and drive orchestrations in the scheduler's task hubs.
var durableTaskDataContributor = '0ad04412-c4d5-4796-b79c-f76d14c8d402'

resource scheduler 'Microsoft.DurableTask/schedulers@2025-11-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    sku: {
      name: skuName
    }
    // An empty list denies every caller; access is governed by the role assignment (Entra) below.
    ipAllowlist: [
      '0.0.0.0/0'
    ]
  }
}

resource taskHub 'Microsoft.DurableTask/schedulers/taskHubs@2025-11-01' = {
  parent: scheduler
  name: taskHubName
}

resource appDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(scheduler.id, appPrincipalId, durableTaskDataContributor)
  scope: scheduler
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', durableTaskDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output name string = scheduler.name
output endpoint string = scheduler.properties.endpoint
output taskHubName string = taskHub.name
