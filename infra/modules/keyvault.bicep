// Key Vault (RBAC authorization, no access policies) holding the webhook signing secret. The
// secret itself is not created here: Azure returns it only when the webhook endpoint is
// registered (scripts/register_webhook.py, azd postprovision hook), which stores it directly.
param name string
param location string
param tags object

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: no VNet in this template; the app resolves its Key Vault reference and the deploying user stores the secret over the public endpoint (RBAC-only access)
  // checkov:skip=CKV_AZURE_189: same reason as CKV_AZURE_109
  // checkov:skip=CKV_AZURE_110: purge protection cannot be turned off again and would block `azd down --purge` and re-provisioning an environment with the same name for the retention period; soft delete stays on
  // checkov:skip=CKV_AZURE_42: same reason as CKV_AZURE_110 (this check requires purge protection as well as soft delete)
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    enabledForDeployment: false
    enabledForTemplateDeployment: false
    enabledForDiskEncryption: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
