// Log Analytics + workspace-based Application Insights with local (instrumentation-key) auth
// disabled: telemetry is accepted only with an Entra token (the app sends
// APPLICATIONINSIGHTS_AUTHENTICATION_STRING=Authorization=AAD with its managed identity, which
// holds Monitoring Metrics Publisher on this component).
param logAnalyticsName string
param appInsightsName string
param location string
param tags object

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
    features: {
      disableLocalAuth: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    DisableLocalAuth: true
  }
}

output appInsightsName string = appInsights.name
// Not a secret: with DisableLocalAuth the instrumentation key inside it cannot ingest without an
// Entra token.
output appInsightsConnectionString string = appInsights.properties.ConnectionString

// ---------------------------------------------------------------------------------------------------
// Observability of calls (docs/observability.md): a workbook and two log alerts on what the app exports
// through OpenTelemetry. Per-call values come from the `record.publish` span (one per call, in
// `dependencies`: outcome, greeting_ms, reason); counts from the app's metrics (in `customMetrics`).

@description('Greeting latency alert: fires when the p95 of accept-to-first-audio over the window is above this many milliseconds.')
@minValue(100)
param greetingP95ThresholdMs int = 2500

@description('Failed-call alert: fires when this percentage (or more) of the answered calls that ended in the window failed.')
@minValue(1)
@maxValue(100)
param failedCallPercentThreshold int = 10

@description('Resource id of an action group to notify when an alert fires; empty = alerts show in the portal only.')
param alertActionGroupId string = ''

var alertActions = empty(alertActionGroupId) ? {} : {
  actionGroups: [
    alertActionGroupId
  ]
}

// KQL on the Application Insights schema. Double quotes only inside, so the Bicep strings need no escaping.
var kqlCallsByOutcome = 'dependencies\n| where name == "record.publish"\n| extend outcome = tostring(customDimensions["record.outcome"])\n| summarize calls = dcount(tostring(customDimensions["call.id"])) by outcome, bin(timestamp, 1h)\n| render columnchart kind=stacked'
var kqlGreeting = 'dependencies\n| where name == "record.publish"\n| extend greeting_ms = todouble(customDimensions["record.greeting_ms"])\n| where isnotnull(greeting_ms)\n| summarize p50 = percentile(greeting_ms, 50), p95 = percentile(greeting_ms, 95) by bin(timestamp, 1h)\n| render timechart'
var kqlToolErrors = 'customMetrics\n| where name == "switchboard.tool.latency"\n| extend tool = tostring(customDimensions["tool"]), ok = tolower(tostring(customDimensions["ok"]))\n| summarize calls = sum(valueCount), errors = sumif(valueCount, ok == "false") by tool\n| extend error_percent = round(100.0 * errors / calls, 1)\n| order by errors desc'
var kqlRejects = 'customMetrics\n| where name == "switchboard.calls.decided"\n| extend action = tostring(customDimensions["action"]), reason = tostring(customDimensions["reason"])\n| where action in ("reject", "refer")\n| summarize calls = sum(value) by reason, bin(timestamp, 1h)\n| render columnchart kind=stacked'
var kqlLiveCalls = 'customMetrics\n| where name == "switchboard.calls.live"\n| summarize live = max(value) by cloud_RoleInstance, bin(timestamp, 5m)\n| summarize live_calls = sum(live) by bin(timestamp, 5m)\n| render timechart'

var workbookItems = [
  {
    title: 'Calls per hour by outcome'
    query: kqlCallsByOutcome
    visualization: 'barchart'
  }
  {
    title: 'Greeting latency p50 / p95 (ms, accept to first response audio)'
    query: kqlGreeting
    visualization: 'timechart'
  }
  {
    title: 'Tool errors'
    query: kqlToolErrors
    visualization: 'table'
  }
  {
    title: 'Rejects and refers by reason'
    query: kqlRejects
    visualization: 'barchart'
  }
  {
    title: 'Live calls'
    query: kqlLiveCalls
    visualization: 'timechart'
  }
]

var workbookContent = {
  version: 'Notebook/1.0'
  items: [for (item, i) in workbookItems: {
    type: 3
    name: 'query-${i}'
    content: {
      version: 'KqlItem/1.0'
      title: item.title
      query: item.query
      size: 0
      queryType: 0
      resourceType: 'microsoft.insights/components'
      visualization: item.visualization
      timeContext: {
        durationMs: 604800000
      }
    }
  }]
  fallbackResourceIds: [
    appInsights.id
  ]
}

resource callsWorkbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(appInsights.id, 'switchboard-calls-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Switchboard calls'
    category: 'workbook'
    sourceId: appInsights.id
    serializedData: string(workbookContent)
  }
}

resource greetingAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-greeting-p95-${appInsightsName}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Switchboard: greeting latency p95 too high'
    description: 'p95 of accept-to-first-response-audio over the last 30 minutes is above ${greetingP95ThresholdMs} ms.'
    severity: 2
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT30M'
    criteria: {
      allOf: [
        {
          query: 'dependencies\n| where name == "record.publish"\n| extend greeting_ms = todouble(customDimensions["record.greeting_ms"])\n| where isnotnull(greeting_ms)\n| summarize p95 = percentile(greeting_ms, 95)'
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'p95'
          operator: 'GreaterThan'
          threshold: greetingP95ThresholdMs
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: alertActions
    autoMitigate: true
  }
}

resource failedCallsAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-failed-calls-${appInsightsName}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Switchboard: failed-call ratio too high'
    description: '${failedCallPercentThreshold}% or more of the answered calls that ended in the last hour failed (at least 5 calls).'
    severity: 1
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    criteria: {
      allOf: [
        {
          query: 'customMetrics\n| where name == "switchboard.calls.ended"\n| extend outcome = tostring(customDimensions["outcome"])\n| where outcome !in ("rejected", "referred")\n| summarize total = sum(value), failed = sumif(value, outcome == "failed")\n| where total >= 5\n| extend failed_percent = 100.0 * failed / total'
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'failed_percent'
          operator: 'GreaterThanOrEqual'
          threshold: failedCallPercentThreshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: alertActions
    autoMitigate: true
  }
}

output workbookId string = callsWorkbook.id
output greetingAlertId string = greetingAlert.id
output failedCallsAlertId string = failedCallsAlert.id
