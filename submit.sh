#!/usr/bin/env bash
# Run a distill job with spark-submit:  ./submit.sh [JOB] [--conf FILE] [--set key=value ...] [job options]
#
#   ./submit.sh                                   # the whole pipeline on the bundled sample, local Spark
#   ./submit.sh ingest --input my_queries.jsonl   # one job
#   ./submit.sh sql "SELECT status, count(*) FROM queries GROUP BY 1" [--csv]
#   ./submit.sh serve                             # a warm session: `sql` then answers in about a second
#   ./submit.sh ingest --master spark://host:7077 --conf conf/cluster.yaml
#
# The story of a run, in order:
#   1. set up .venv on first use (scripts/bootstrap.sh; seconds when nothing changed);
#   2. turn the config into spark-submit settings (master, Delta jars, the venv's python for workers);
#   3. ship the code to the executors as a zip (--py-files), so a cluster needs only the environment;
#   4. spark-submit jobs/main.py, which runs the job and records it in the `runs` table.
# Extra spark-submit options go in DISTILL_SUBMIT_ARGS, e.g. DISTILL_SUBMIT_ARGS="--executor-memory 8g".
set -euo pipefail
root=$(cd "$(dirname "$0")" && pwd)
venv="$root/.venv"

# 1. environment
"$root/scripts/bootstrap.sh"

# --master URL is spark-submit's word for it; here it is the config key spark.master.
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --master) args+=(--set "spark.master=${2:?--master needs a URL}"); shift 2 ;;
    --master=*) args+=(--set "spark.master=${1#--master=}"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done

# sql first asks a warm session (`./submit.sh serve`) for this warehouse, which answers without a JVM here;
# exit 75 means there is none, and the query takes the cold path below.
if [ "${args[0]:-}" = sql ]; then
  rc=0
  DISTILL_WARM_ONLY=1 "$venv/bin/python" -m distill.cli "${args[@]}" || rc=$?
  [ "$rc" = 75 ] || exit "$rc"
fi

# 3. the code, zipped for executors that do not share this checkout. The zip is named by its content and
# never rewritten: a running job's driver reads its zip's index once and seeks into the file later, so a
# second submit.sh from this checkout (a `sql` query during a pipeline run) must not change it under it.
build="$root/build"
mkdir -p "$build"
tmpzip=$(mktemp "$build/.distill-code.XXXXXX")
(cd "$root/lib" && "$venv/bin/python" -m zipfile -c "$tmpzip" distill >/dev/null)
(cd "$root" && "$venv/bin/python" - "$tmpzip" <<'PY'
import sys, zipfile, pathlib
with zipfile.ZipFile(sys.argv[1], "a") as z:
    for p in sorted(pathlib.Path("jobs").glob("*.py")):
        z.write(p, str(p))
PY
)
pyzip="$build/distill-code-$(sha256sum "$tmpzip" | cut -c1-16).zip"
if [ -e "$pyzip" ]; then rm -f "$tmpzip"; else chmod 644 "$tmpzip" && mv "$tmpzip" "$pyzip"; fi

# 2. spark-submit settings from the config (exit 2 with the key's name on a bad config)
rc=0
settings=$("$venv/bin/python" -m distill.submit_args "${args[@]+"${args[@]}"}" --py-files "$pyzip" \
  --driver-java-options="-Dlog4j2.configurationFile=file:$root/conf/log4j2.properties") || rc=$?
[ "$rc" = 0 ] || exit "$rc"
mapfile -t spark_args <<<"$settings"

# 4. run
export PYSPARK_PYTHON="$venv/bin/python" PYSPARK_DRIVER_PYTHON="$venv/bin/python"
# Local mode talks only to itself: bind to loopback rather than guess a network address.
[[ "${spark_args[1]}" == local* ]] && export SPARK_LOCAL_IP=${SPARK_LOCAL_IP:-127.0.0.1}
# shellcheck disable=SC2086  # DISTILL_SUBMIT_ARGS is a list of words on purpose
exec "$venv/bin/spark-submit" "${spark_args[@]}" ${DISTILL_SUBMIT_ARGS:-} "$root/jobs/main.py" "${args[@]+"${args[@]}"}"
