# Alarms on the Lambda (errors, throttles, duration near its timeout) and the HTTP API (5xx, latency).
# Metric names: https://docs.aws.amazon.com/lambda/latest/dg/monitoring-metrics-types.html and
# https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-metrics.html

locals {
  lambda_alarms = {
    errors = {
      metric      = "Errors", statistic = "Sum", extended = null, threshold = 1
      description = "The Lambda ${local.function_name} raised errors (unhandled exceptions or timeouts)."
    }
    throttles = {
      metric      = "Throttles", statistic = "Sum", extended = null, threshold = 1
      description = "Lambda ${local.function_name} was throttled: its concurrency is used up (see lambda_reserved_concurrency)."
    }
    duration = {
      # p99 above 80 % of the timeout: requests are about to time out.
      metric      = "Duration", statistic = null, extended = "p99", threshold = var.lambda_timeout_seconds * 1000 * 0.8
      description = "p99 duration of ${local.function_name} is above 80 % of its ${var.lambda_timeout_seconds} s timeout."
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "lambda" {
  for_each = local.lambda_alarms

  alarm_name          = "${local.function_name}-lambda-${each.key}"
  alarm_description   = each.value.description
  namespace           = "AWS/Lambda"
  metric_name         = each.value.metric
  statistic           = each.value.statistic
  extended_statistic  = each.value.extended
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  threshold           = each.value.threshold
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  dimensions          = { FunctionName = aws_lambda_function.api.function_name }
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "api_5xx" {
  alarm_name          = "${var.name_prefix}-api-5xx"
  alarm_description   = "The HTTP API ${var.name_prefix}-api answered with 5xx errors."
  namespace           = "AWS/ApiGateway"
  metric_name         = "5xx"
  statistic           = "Sum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  threshold           = var.alarm_api_5xx_threshold
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  dimensions          = { ApiId = aws_apigatewayv2_api.this.id, Stage = aws_apigatewayv2_stage.default.name }
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "api_latency" {
  alarm_name          = "${var.name_prefix}-api-latency-p90"
  alarm_description   = "p90 latency of the HTTP API ${var.name_prefix}-api is above ${var.alarm_api_latency_p90_ms} ms."
  namespace           = "AWS/ApiGateway"
  metric_name         = "Latency"
  extended_statistic  = "p90"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  threshold           = var.alarm_api_latency_p90_ms
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  dimensions          = { ApiId = aws_apigatewayv2_api.this.id, Stage = aws_apigatewayv2_stage.default.name }
  tags                = var.tags
}
