# The scale-out search backends. Nothing here exists with search_backend = "embedded".

locals {
  opensearch_name = "${var.name_prefix}-search"
  domain_arn      = "arn:${local.partition}:es:${local.region}:${local.account_id}:domain/${local.opensearch_name}"
  domain          = var.search_backend == "opensearch_domain"
  collection      = var.search_backend == "opensearch_serverless"
  read_actions    = ["es:ESHttpGet", "es:ESHttpPost", "es:ESHttpHead"]
  write_actions   = ["es:ESHttpGet", "es:ESHttpPost", "es:ESHttpPut", "es:ESHttpHead", "es:ESHttpDelete"]
}

# ---------------------------------------------------------------------------------------------
# Managed domain: encrypted at rest under the project key, node-to-node encryption, HTTPS only
# with TLS 1.2+, and a resource policy naming only the API Lambda (reads) and the ingest roles.
# ---------------------------------------------------------------------------------------------
resource "aws_opensearch_domain" "search" {
  #checkov:skip=CKV_AWS_137:The Lambda runs outside a VPC; every request is SigV4-signed and the resource policy names only the Lambda and ingest roles.
  #checkov:skip=CKV_AWS_84:Slow-log and application-log publishing need a CloudWatch resource policy per account; enable them when operating the domain (docs/search.md).
  #checkov:skip=CKV_AWS_317:Audit logs need fine-grained access control, which IAM-only access (the resource policy) does not use.
  #checkov:skip=CKV2_AWS_52:Access is IAM-only (SigV4 + resource policy); fine-grained access control would add an internal user database.
  #checkov:skip=CKV_AWS_318:Dedicated master nodes triple the cost of a small product index; set them for production clusters above ~10 data nodes.
  #checkov:skip=CKV2_AWS_59:Dedicated master nodes triple the cost of a small product index (as CKV_AWS_318).
  #checkov:skip=CKV_AWS_248:The domain has no VPC options (see CKV_AWS_137), so no security group at all, default or not.
  count = local.domain ? 1 : 0

  domain_name    = local.opensearch_name
  engine_version = var.opensearch_domain.engine_version

  cluster_config {
    instance_type          = var.opensearch_domain.instance_type
    instance_count         = var.opensearch_domain.instance_count
    zone_awareness_enabled = var.opensearch_domain.instance_count > 1

    dynamic "zone_awareness_config" {
      for_each = var.opensearch_domain.instance_count > 1 ? [1] : []
      content {
        availability_zone_count = 2
      }
    }
  }

  ebs_options {
    ebs_enabled = true
    volume_type = "gp3"
    volume_size = var.opensearch_domain.volume_size_gb
  }

  encrypt_at_rest {
    enabled    = true
    kms_key_id = var.kms_key_arn
  }

  node_to_node_encryption {
    enabled = true
  }

  domain_endpoint_options {
    enforce_https       = true
    tls_security_policy = "Policy-Min-TLS-1-2-2019-07"
  }

  access_policies = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [{
        Sid       = "ApiLambdaReads"
        Effect    = "Allow"
        Principal = { AWS = var.lambda_role_arn }
        Action    = local.read_actions
        Resource  = "${local.domain_arn}/*"
      }],
      length(var.ingest_role_arns) > 0 ? [{
        Sid       = "IngestWrites"
        Effect    = "Allow"
        Principal = { AWS = var.ingest_role_arns }
        Action    = local.write_actions
        Resource  = "${local.domain_arn}/*"
      }] : [],
    )
  })

  tags = var.tags
}

# ---------------------------------------------------------------------------------------------
# Serverless vector collection: encryption (project key), network and data-access policies.
# Serverless vector collections refuse custom _id and _refresh; loom index push handles it.
# ---------------------------------------------------------------------------------------------
resource "aws_opensearchserverless_security_policy" "encryption" {
  count = local.collection ? 1 : 0

  name = "${local.opensearch_name}-enc"
  type = "encryption"
  policy = jsonencode({
    Rules       = [{ ResourceType = "collection", Resource = ["collection/${local.opensearch_name}"] }]
    AWSOwnedKey = false
    KmsARN      = var.kms_key_arn
  })
}

resource "aws_opensearchserverless_security_policy" "network" {
  count = local.collection ? 1 : 0

  name = "${local.opensearch_name}-net"
  type = "network"
  # A public endpoint: the Lambda runs outside a VPC. Every request still needs SigV4 and the data-access
  # policy below; use a VPC endpoint (SourceVPCEs) when the callers live in a VPC.
  policy = jsonencode([{
    Rules           = [{ ResourceType = "collection", Resource = ["collection/${local.opensearch_name}"] }]
    AllowFromPublic = true
  }])
}

resource "aws_opensearchserverless_access_policy" "data" {
  count = local.collection ? 1 : 0

  name = "${local.opensearch_name}-data"
  type = "data"
  policy = jsonencode(concat(
    [{
      Description = "The API Lambda reads the product index"
      Rules = [{ ResourceType = "index", Resource = ["index/${local.opensearch_name}/${var.opensearch_index}"],
      Permission = ["aoss:ReadDocument", "aoss:DescribeIndex"] }]
      Principal = [var.lambda_role_arn]
    }],
    length(var.ingest_role_arns) > 0 ? [{
      Description = "Ingest roles create and write the product index (loom index push)"
      Rules = [{ ResourceType = "index", Resource = ["index/${local.opensearch_name}/${var.opensearch_index}"],
      Permission = ["aoss:CreateIndex", "aoss:UpdateIndex", "aoss:DescribeIndex", "aoss:ReadDocument", "aoss:WriteDocument"] }]
      Principal = var.ingest_role_arns
    }] : [],
  ))
}

resource "aws_opensearchserverless_collection" "search" {
  count = local.collection ? 1 : 0

  name        = local.opensearch_name
  type        = "VECTORSEARCH"
  description = "Loom product search: CLIP embeddings and product attributes"
  tags        = var.tags

  depends_on = [aws_opensearchserverless_security_policy.encryption, aws_opensearchserverless_security_policy.network]
}
