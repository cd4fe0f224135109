#!/usr/bin/env bash
# Run the teacher pass on Spark 3 through Beam's portable Spark runner.
#
#   Mode "dataproc" (YARN): build a self-contained pipeline jar here, submit it as a Dataproc Spark job.
#     SPARK_MODE=dataproc CLUSTER=pdistill-spark REGION=us-central1 WORKER_IMAGE=... \
#       infra/spark/submit_spark.sh --input 'gs://CORPUS/*.parquet' --teacher gs://MODELS/t --output gs://DATASETS/pd/v1
#
#   Mode "standalone" (spark://): start (or reuse) a Beam Spark job server next to the master and
#   submit through it.
#     SPARK_MODE=standalone SPARK_MASTER_URL=spark://spark-master:7077 WORKER_IMAGE=... \
#       infra/spark/submit_spark.sh --input ... --teacher ... --output ...
#
# What must exist is listed in infra/spark/README.md. Arguments are `pdistill logits` options.
# Not run on CI: the Beam job server jar comes from Maven Central at run time.
source "$(dirname "$0")/../common.sh"

BEAM_VERSION="${BEAM_VERSION:-2.71.0}"
SPARK_MODE="${SPARK_MODE:-dataproc}"
WORKER_IMAGE="${WORKER_IMAGE:?set WORKER_IMAGE (the pdistill worker image, pullable from every Spark node)}"
PDISTILL="${PDISTILL:-$REPO_ROOT/.venv/bin/pdistill}"
command -v "$PDISTILL" >/dev/null 2>&1 || PDISTILL=pdistill
JOB_SERVER_JAR_URL="https://repo1.maven.org/maven2/org/apache/beam/beam-runners-spark-3-job-server/$BEAM_VERSION/beam-runners-spark-3-job-server-$BEAM_VERSION.jar"

runner_config="$(mktemp --suffix=.json)"; trap 'rm -f "$runner_config" "${jar:-}"' EXIT

case "$SPARK_MODE" in
  dataproc)
    CLUSTER="${CLUSTER:?set CLUSTER (the Dataproc cluster name)}"
    REGION="${REGION:-$(tf_out region)}"
    PROJECT="${PROJECT:-$(tf_out project_id)}"
    jar="$(mktemp --suffix=.jar)"
    # 1. Translate the pipeline into a jar that carries the Spark pipeline runner (Beam downloads
    #    the Spark job-server jar once into ~/.apache_beam/cache/jars; Java 11+ needed here).
    cat >"$runner_config" <<JSON
{
  "spark_master_url": "yarn",
  "spark_version": "3",
  "environment_type": "DOCKER",
  "environment_config": "$WORKER_IMAGE",
  "sdk_worker_parallelism": 1,
  "setup_file": ""
}
JSON
    "$PDISTILL" logits --runner SparkRunner --runner-config "$runner_config" --no-progress \
      --output_executable_path="$jar" "$@"
    # 2. Run it on the cluster's Spark (YARN); the SDK workers start from WORKER_IMAGE via Docker.
    gcloud dataproc jobs submit spark \
      --project "$PROJECT" --region "$REGION" --cluster "$CLUSTER" \
      --class org.apache.beam.runners.spark.SparkPipelineRunner \
      --jars "$jar" \
      --properties "spark.executor.cores=${EXECUTOR_CORES:-4},spark.task.resource.gpu.amount=${TASK_GPUS:-0}"
    ;;
  standalone)
    SPARK_MASTER_URL="${SPARK_MASTER_URL:?set SPARK_MASTER_URL, e.g. spark://spark-master:7077}"
    JOB_ENDPOINT="${JOB_ENDPOINT:-}"
    if [[ -z "$JOB_ENDPOINT" ]]; then
      # Start a job server on this machine (it must reach the Spark master and be reachable by it).
      jar_path="${JOB_SERVER_JAR:-$HOME/.apache_beam/cache/jars/$(basename "$JOB_SERVER_JAR_URL")}"
      if [[ ! -f "$jar_path" ]]; then
        mkdir -p "$(dirname "$jar_path")"
        curl -fsSL -o "$jar_path" "$JOB_SERVER_JAR_URL"
      fi
      java -jar "$jar_path" --spark-master-url="$SPARK_MASTER_URL" \
        --job-port=8099 --artifact-port=8098 --expansion-port=8097 &
      job_server_pid=$!
      trap 'kill "$job_server_pid" 2>/dev/null || true; rm -f "$runner_config"' EXIT
      for _ in $(seq 60); do (exec 3<>/dev/tcp/127.0.0.1/8099) 2>/dev/null && break; sleep 1; done
      JOB_ENDPOINT=localhost:8099
    fi
    cat >"$runner_config" <<JSON
{
  "job_endpoint": "$JOB_ENDPOINT",
  "spark_master_url": "$SPARK_MASTER_URL",
  "environment_type": "DOCKER",
  "environment_config": "$WORKER_IMAGE",
  "sdk_worker_parallelism": 1,
  "setup_file": ""
}
JSON
    "$PDISTILL" logits --runner SparkRunner --runner-config "$runner_config" --no-progress "$@"
    ;;
  *)
    echo "error: SPARK_MODE must be dataproc or standalone" >&2; exit 2 ;;
esac
