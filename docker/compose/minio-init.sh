#!/bin/sh
# The minio-init service of docker-compose.yaml (minio/mc image), run on every `docker compose up`: the two
# buckets and two least-privilege users, each allowed one bucket only. Idempotent.
set -eu

: "${RETRAINER_DATA_BUCKET:?}" "${MLFLOW_ARTIFACT_BUCKET:?}"
: "${PLATFORM_S3_ACCESS_KEY:?}" "${PLATFORM_S3_SECRET_KEY:?}"
: "${MLFLOW_S3_ACCESS_KEY:?}" "${MLFLOW_S3_SECRET_KEY:?}"

mc alias set local http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "local/$RETRAINER_DATA_BUCKET" "local/$MLFLOW_ARTIFACT_BUCKET"

# Read, write, delete and list one bucket (moves into quarantine/ and processed/ are copy + delete;
# large uploads are multipart).
bucket_policy() {
    cat <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow",
     "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
     "Resource": ["arn:aws:s3:::$1"]},
    {"Effect": "Allow",
     "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts"],
     "Resource": ["arn:aws:s3:::$1/*"]}
  ]
}
JSON
}

# user_with_bucket POLICY_NAME ACCESS_KEY SECRET_KEY BUCKET
user_with_bucket() {
    bucket_policy "$4" > "/tmp/$1.json"
    mc admin policy create local "$1" "/tmp/$1.json" >/dev/null
    mc admin user add local "$2" "$3" >/dev/null
    if ! out=$(mc admin policy attach local "$1" --user "$2" 2>&1); then
        case "$out" in
            *"already in effect"*) ;;
            *) echo "$out" >&2; exit 1 ;;
        esac
    fi
    echo "minio-init: user $2 may use bucket $4 only (policy $1)"
}

user_with_bucket retrainer-platform "$PLATFORM_S3_ACCESS_KEY" "$PLATFORM_S3_SECRET_KEY" "$RETRAINER_DATA_BUCKET"
user_with_bucket retrainer-mlflow "$MLFLOW_S3_ACCESS_KEY" "$MLFLOW_S3_SECRET_KEY" "$MLFLOW_ARTIFACT_BUCKET"
