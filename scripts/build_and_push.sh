#!/usr/bin/env bash
# Build the Loom training and inference images and push them to ECR, like the `images` workflow
# does from CI. For a platform engineer with Docker (BuildKit) and AWS credentials.
#
#   scripts/build_and_push.sh <account-id> <region> [tag]
#
# tag defaults to the current commit SHA (refused on a dirty tree: the tag would lie).
# The repositories are <prefix>-training and <prefix>-inference; LOOM_NAME_PREFIX sets the prefix
# (default loom). Three images: training:<tag> and inference:<tag> on the CUDA PyTorch base, and
# inference:<tag>-cpu, the CPU build (BASE_IMAGE=cpu-base) that a Serverless Inference search endpoint
# runs (docs/search.md). LOOM_IMAGES picks some of them (default "training inference inference-cpu").
# Tags are immutable: an image that already exists under the tag is not rebuilt.
# Prints one image URI per line on stdout when done; everything else goes to stderr.
set -euo pipefail

usage() {
  echo "usage: $0 <account-id> <region> [tag]" >&2
  echo "  e.g. $0 123456789012 us-east-1            (tag = current commit SHA)" >&2
  exit 2
}
die() {
  echo "build_and_push: $*" >&2
  exit 1
}

[[ $# -ge 2 && $# -le 3 ]] || usage
account=$1
region=$2
tag=${3:-}
prefix=${LOOM_NAME_PREFIX:-loom}

[[ $account =~ ^[0-9]{12}$ ]] || { echo "build_and_push: account must be a 12-digit AWS account id, got '$account'" >&2; exit 2; }
[[ $region =~ ^[a-z]{2}(-[a-z]+)+-[0-9]$ ]] || { echo "build_and_push: region must look like us-east-1, got '$region'" >&2; exit 2; }

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

if [[ -z $tag ]]; then
  command -v git >/dev/null 2>&1 || die "git not found: pass the tag explicitly"
  tag=$(git rev-parse HEAD)
  if [[ -n $(git status --porcelain --untracked-files=no) ]]; then
    die "the working tree has uncommitted changes; commit them or pass an explicit tag"
  fi
fi
# At most 124 characters: <tag>-cpu must stay within ECR's 128.
[[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,123}$ ]] || { echo "build_and_push: invalid image tag '$tag' (letters, digits, _ . -; at most 124)" >&2; exit 2; }

wanted=${LOOM_IMAGES:-training inference inference-cpu}
read -r -a images <<<"$wanted"
for image in "${images[@]}"; do
  case $image in
    training | inference | inference-cpu) ;;
    *) echo "build_and_push: LOOM_IMAGES: unknown image '$image' (training, inference, inference-cpu)" >&2; exit 2 ;;
  esac
done

command -v docker >/dev/null 2>&1 || die "docker not found on PATH (install Docker with BuildKit/buildx)"
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon (is it running, and may this user use it?)"
docker buildx version >/dev/null 2>&1 || die "docker buildx (BuildKit) is required"
command -v aws >/dev/null 2>&1 || die "aws CLI not found on PATH (AWS CLI v2 is needed for ECR login)"

caller_account=$(aws sts get-caller-identity --query Account --output text 2>/dev/null) \
  || die "no usable AWS credentials (aws sts get-caller-identity failed); set AWS_PROFILE or log in with aws sso login"
[[ $caller_account == "$account" ]] || die "credentials belong to account $caller_account, not $account"

suffix=amazonaws.com
[[ $region == cn-* ]] && suffix=amazonaws.com.cn
registry="$account.dkr.ecr.$region.$suffix"

aws ecr get-login-password --region "$region" | docker login --username AWS --password-stdin "$registry" >&2 \
  || die "docker login to $registry failed"

uris=()
for image in "${images[@]}"; do
  # <repository image>, the Dockerfile stage BASE_IMAGE names, the tag's suffix.
  case $image in
    training) name=training base=cuda-base suffix= ;;
    inference) name=inference base=cuda-base suffix= ;;
    inference-cpu) name=inference base=cpu-base suffix=-cpu ;;
  esac
  repository="$prefix-$name"
  uri="$registry/$repository:$tag$suffix"
  aws ecr describe-repositories --region "$region" --repository-names "$repository" >/dev/null 2>&1 \
    || die "ECR repository $repository not found in $region: run 'make tf-foundation' first"
  if aws ecr describe-images --region "$region" --repository-name "$repository" --image-ids "imageTag=$tag$suffix" >/dev/null 2>&1; then
    echo "build_and_push: $uri already exists (tags are immutable); not rebuilding" >&2
  else
    echo "build_and_push: building $uri from containers/$name/Dockerfile (BASE_IMAGE=$base)" >&2
    # Single-platform manifest without attestations: SageMaker rejects image indexes.
    DOCKER_BUILDKIT=1 docker buildx build \
      --platform linux/amd64 \
      --provenance=false \
      --sbom=false \
      --file "containers/$name/Dockerfile" \
      --build-arg "BASE_IMAGE=$base" \
      --tag "$uri" \
      --push \
      . >&2
  fi
  uris+=("$uri")
done

printf '%s\n' "${uris[@]}"
echo "build_and_push: for terraform: inference_image_tag=$tag (search's serverless endpoint runs $tag-cpu by default)" >&2
