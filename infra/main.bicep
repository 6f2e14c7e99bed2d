// redis-migrate function app: everything `azd up` creates (or `az deployment group create
// -f infra/main.bicep`). The names the app uses (queues, containers, settings) are checked
// against functions/*.go, host.json and functions/*/function.json by infra_test.go.
targetScope = 'resourceGroup'

@description('azd environment name; a prefix of every resource name.')
param environmentName string

@description('Region of every resource.')
param location string = resourceGroup().location

@description('FlexConsumption (Linux, per-instance scale, Event Grid for blob events) or ElasticPremium (EP1, always-warm instances).')
@allowed([
  'FlexConsumption'
  'ElasticPremium'
])
param hostingPlan string = 'FlexConsumption'

@description('Optional: an existing Azure Managed Redis cluster (Microsoft.Cache/redisEnterprise) in this resource group, the migration target. Empty: none; set TARGET_REDIS yourself.')
param redisClusterName string = ''

@description('Database of that cluster (Azure Managed Redis has one, named default).')
param redisDatabaseName string = 'default'

@description('Optional: the source, a redis:// or rediss:// URL, stored as the SOURCE_REDIS app setting (prefer a Key Vault reference: @Microsoft.KeyVault(SecretUri=...)).')
@secure()
param sourceRedis string = ''

@description('Optional: app setting that dropped RDB files are imported into (e.g. TARGET_REDIS); empty: only POST /api/imports starts imports.')
param importTargetSetting string = ''

@description('Flex Consumption: most instances the app scales out to.')
param maximumInstanceCount int = 40

var suffix = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var tags = { 'azd-env-name': environmentName }

// The app's queues (shared/queue: Plan, Copy, Imports, Sync) and containers (functions:
// STATE_CONTAINER default, ImportContainer), and the deployment package container of Flex.
var queueNames = [
  'plan'
  'copy'
  'imports'
  'sync'
]
var stateContainer = 'migrations'
var importContainer = 'rdb-imports'
var deploymentContainer = 'app-package'
// The host's own containers (keys, blob receipts, leases): the identity needs them too.
var hostContainers = [
  'azure-webjobs-hosts'
  'azure-webjobs-secrets'
]
var maxDeliveryCount = 10

// Built-in role definition ids.
var roleStorageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var roleServiceBusDataSender = '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
var roleServiceBusDataReceiver = '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
var roleMonitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-redismigrate-${suffix}'
  location: location
  tags: tags
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-redismigrate-${suffix}'
  location: location
  tags: tags
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-redismigrate-${suffix}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'stredismig${take(suffix, 13)}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false // identity only: no account key in any setting
    supportsHttpsTrafficOnly: true
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for c in concat([stateContainer, importContainer, deploymentContainer], hostContainers): {
  parent: blobService
  name: c
  properties: { publicAccess: 'None' }
}]

// Storage Blob Data Owner on each container the app and its host use, not on the account.
resource containerRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (c, i) in concat([stateContainer, importContainer, deploymentContainer], hostContainers): {
  name: guid(storage.id, c, identity.id, roleStorageBlobDataOwner)
  scope: containers[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleStorageBlobDataOwner)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}]

resource serviceBus 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: 'sb-redismigrate-${suffix}'
  location: location
  tags: tags
  sku: { name: 'Standard', tier: 'Standard' } // Basic has no duplicate detection
  properties: {
    minimumTlsVersion: '1.2'
    disableLocalAuth: true
  }
}

// Duplicate detection drops a re-sent MessageId for an hour (batches, plan steps and import
// messages have deterministic ids); SERVICEBUS_MAX_DELIVERY_COUNT below must equal
// maxDeliveryCount; the host renews the one-minute lock while a function runs.
resource queues 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = [for q in queueNames: {
  parent: serviceBus
  name: q
  properties: {
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT1H'
    maxDeliveryCount: maxDeliveryCount
    lockDuration: 'PT1M'
    deadLetteringOnMessageExpiration: true
    maxSizeInMegabytes: 1024
  }
}]

resource sbSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(serviceBus.id, identity.id, roleServiceBusDataSender)
  scope: serviceBus
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleServiceBusDataSender)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource sbReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(serviceBus.id, identity.id, roleServiceBusDataReceiver)
  scope: serviceBus
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleServiceBusDataReceiver)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource insightsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, identity.id, roleMonitoringMetricsPublisher)
  scope: insights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleMonitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// BlobCreated of the imports container -> the imports queue. Event Grid raises it for PutBlob,
// PutBlockList and CopyBlob only (an upload), never for a metadata change. The system topic's
// identity sends to the queue.
resource storageEvents 'Microsoft.EventGrid/systemTopics@2024-06-01-preview' = {
  name: 'evgt-redismigrate-${suffix}'
  location: location
  tags: tags
  identity: { type: 'SystemAssigned' }
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource topicSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(serviceBus.id, storageEvents.id, roleServiceBusDataSender)
  scope: queues[2] // imports
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleServiceBusDataSender)
    principalId: storageEvents.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource importEvents 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2024-06-01-preview' = {
  parent: storageEvents
  name: 'rdb-imports-to-imports-queue'
  dependsOn: [ topicSender ]
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    deliveryWithResourceIdentity: {
      identity: { type: 'SystemAssigned' }
      destination: {
        endpointType: 'ServiceBusQueue'
        properties: { resourceId: queues[2].id }
      }
    }
    filter: {
      includedEventTypes: [ 'Microsoft.Storage.BlobCreated' ]
      subjectBeginsWith: '/blobServices/default/containers/${importContainer}/'
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-redismigrate-${suffix}'
  location: location
  tags: tags
  kind: hostingPlan == 'FlexConsumption' ? 'functionapp' : 'elastic'
  sku: hostingPlan == 'FlexConsumption' ? { name: 'FC1', tier: 'FlexConsumption' } : { name: 'EP1', tier: 'ElasticPremium' }
  properties: {
    reserved: true // Linux
    maximumElasticWorkerCount: hostingPlan == 'ElasticPremium' ? 20 : null
  }
}

resource redis 'Microsoft.Cache/redisEnterprise@2024-09-01-preview' existing = if (!empty(redisClusterName)) {
  name: empty(redisClusterName) ? 'none' : redisClusterName
}

var redisTarget = empty(redisClusterName) ? '' : 'rediss://${identity.properties.principalId}@${redis!.properties.hostName}:10000?auth=entra&client-id=${identity.properties.clientId}'

// Every setting the app reads is here or listed as optional in the README ("Settings").
var commonSettings = {
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.properties.clientId
  ServiceBusConnection__fullyQualifiedNamespace: '${serviceBus.name}.servicebus.windows.net'
  ServiceBusConnection__credential: 'managedidentity'
  ServiceBusConnection__clientId: identity.properties.clientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: insights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
  STATE_CONTAINER: stateContainer
  SERVICEBUS_MAX_DELIVERY_COUNT: string(maxDeliveryCount)
  TARGET_REDIS: redisTarget
  SOURCE_REDIS: sourceRedis
  IMPORT_TARGET_SETTING: importTargetSetting
  // Keep below functionTimeout (host.json 00:30:00).
  IMPORT_INVOCATION_SECONDS: '1500'
  // SyncWatchdog's NCRONTAB schedule: the host does not run a timer whose %SETTING% is unset.
  SYNC_WATCHDOG_SCHEDULE: '*/30 * * * * *'
}

// Elastic Premium runs the custom handler on the Functions runtime stack; Flex Consumption
// declares it in functionAppConfig.runtime instead (FUNCTIONS_WORKER_RUNTIME is not allowed there).
var premiumSettings = {
  FUNCTIONS_EXTENSION_VERSION: '~4'
  FUNCTIONS_WORKER_RUNTIME: 'custom'
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: 'func-redismigrate-${suffix}'
  location: location
  tags: union(tags, { 'azd-service-name': 'app' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identity.id}': {} }
  }
  dependsOn: [ containerRoles, sbSender, sbReceiver ]
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identity.id
    functionAppConfig: hostingPlan == 'FlexConsumption' ? {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: 2048
      }
      runtime: { name: 'custom', version: '1.0' }
    } : null
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      linuxFxVersion: hostingPlan == 'ElasticPremium' ? '' : null
      appSettings: [for s in items(hostingPlan == 'FlexConsumption' ? commonSettings : union(commonSettings, premiumSettings)): {
        name: s.key
        value: s.value
      }]
    }
  }
}

// Entra ID access of the app's identity to the target database (data access policy "default").
resource redisAccess 'Microsoft.Cache/redisEnterprise/databases/accessPolicyAssignments@2024-09-01-preview' = if (!empty(redisClusterName)) {
  name: '${empty(redisClusterName) ? 'none' : redisClusterName}/${redisDatabaseName}/redismigrateapp'
  properties: {
    accessPolicyName: 'default'
    user: { objectId: identity.properties.principalId }
  }
}

output AZURE_FUNCTION_APP_NAME string = app.name
output AZURE_FUNCTION_APP_URL string = 'https://${app.properties.defaultHostName}'
output AZURE_STORAGE_ACCOUNT string = storage.name
output AZURE_SERVICEBUS_NAMESPACE string = serviceBus.name
output AZURE_IDENTITY_CLIENT_ID string = identity.properties.clientId
output AZURE_IDENTITY_PRINCIPAL_ID string = identity.properties.principalId
output IMPORT_CONTAINER string = importContainer
