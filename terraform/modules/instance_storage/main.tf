# One rule, used by every module that sets a volume KMS key on SageMaker instances (modules/endpoint,
# modules/search): instance types with NVMe instance storage encrypt it with a hardware module on the
# instance. For endpoints, CreateEndpointConfig's KmsKeyId "does not encrypt instance local storage" on
# those types (the current API reference and botocore's model; earlier versions said the key could not be
# requested there), so the modules leave the key out for them: it would protect nothing. Training and
# transform jobs still refuse VolumeKmsKeyId on them ("You can't request a VolumeKmsKeyId when using an
# instance type with local storage").
#   https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateEndpointConfig.html (KmsKeyId)
#   https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ResourceConfig.html (VolumeKmsKeyId)
#   https://docs.aws.amazon.com/sagemaker/latest/dg/host-instance-storage.html (the instance types)
# operations/sagemaker_jobs.py has_instance_storage applies the same rule to training and transform
# jobs; tests/operations/test_sagemaker_jobs.py compares the two, terraform/tests/instance_storage.tftest.hcl
# checks this module against a table of types.
#
# A "d" attribute after the generation (m5d, m6id, c5d, c6id, r5d, r7gd, g4dn, g4ad, p3dn, p4d,
# p4de, c7gd ...) or one of the accelerated families whose NVMe storage has no "d" in the name (g5,
# g6, g6e, gr6, p5, p5e, p5en, p6, p6e, trn1, trn1n, trn2). Hyphenated families (p6-b200) count by
# their base family. inf1/inf2 and the plain families (m5, c6i, p3 ...) are EBS-only.
locals {
  pattern = "^ml\\.([a-z]+[0-9]+[a-z]*d[a-z]*|g5|g6|g6e|gr6|p5|p5e|p5en|p6|p6e|trn1|trn1n|trn2)(-[a-z0-9]+)?\\.[a-z0-9]+$"
}
