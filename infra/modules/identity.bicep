// User-assigned identity of the Function App. User-assigned (not system-assigned) so that role
// assignments and the AzureWebJobsStorage / deployment-storage settings can reference it before
// the site exists, and it survives re-creating the app.
param name string
param location string
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
