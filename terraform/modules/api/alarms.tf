# Alarms on the Lambda (errors, throttles, duration near its timeout) and the HTTP API (5xx, latency).
# Metric names: https://docs.aws.amazon.com/lambda/latest/dg/monitoring-metrics-types.html and
# https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-metrics.html

locals {
  lambda_dimensions = { FunctionName = aws_lambda_function.api.function_name }
  api_dimensions    = { ApiId = aws_apigatewayv2_api.this.id, Stage = aws_apigatewayv2_stage.default.name }

  # alarm name -> what it watches; a statistic is either a plain one or a percentile.
  alarms = {
    "${local.function_name}-lambda-errors" = {
      namespace   = "AWS/Lambda", metric = "Errors", statistic = "Sum", percentile = null, threshold = 1,
      dimensions  = local.lambda_dimensions
      description = "The Lambda ${local.function_name} raised errors (unhandled exceptions or timeouts)."
    }
    "${local.function_name}-lambda-throttles" = {
      namespace   = "AWS/Lambda", metric = "Throttles", statistic = "Sum", percentile = null, threshold = 1,
      dimensions  = local.lambda_dimensions
      description = "Lambda ${local.function_name} was throttled: its concurrency is used up (lambda_reserved_concurrency, account quota)."
    }
    "${local.function_name}-lambda-duration" = {
      # p99 at 80 % of the timeout: requests are about to time out.
      namespace   = "AWS/Lambda", metric = "Duration", statistic = null, percentile = "p99", threshold = var.lambda_timeout_seconds * 1000 * 0.8,
      dimensions  = local.lambda_dimensions
      description = "p99 duration of ${local.function_name} is at 80 % of its ${var.lambda_timeout_seconds} s timeout."
    }
    "${var.name_prefix}-api-5xx" = {
      namespace   = "AWS/ApiGateway", metric = "5xx", statistic = "Sum", percentile = null, threshold = var.alarm_api_5xx_threshold,
      dimensions  = local.api_dimensions
      description = "The HTTP API ${var.name_prefix}-api answered with 5xx errors."
    }
    "${var.name_prefix}-api-latency-p90" = {
      namespace   = "AWS/ApiGateway", metric = "Latency", statistic = null, percentile = "p90", threshold = var.alarm_api_latency_p90_ms,
      dimensions  = local.api_dimensions
      description = "p90 latency of the HTTP API ${var.name_prefix}-api is at ${var.alarm_api_latency_p90_ms} ms or more."
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "this" {
  for_each = local.alarms

  alarm_name          = each.key
  alarm_description   = each.value.description
  namespace           = each.value.namespace
  metric_name         = each.value.metric
  statistic           = each.value.statistic
  extended_statistic  = each.value.percentile
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  threshold           = each.value.threshold
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  dimensions          = each.value.dimensions
  tags                = var.tags
}
