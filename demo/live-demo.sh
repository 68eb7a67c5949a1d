#!/usr/bin/env bash
# The one-minute demo: a SecurityAgent applied, its pods, a feature toggled
# off and on, an override rolled out, the status conditions, and what landed
# in Elasticsearch. Works on any cluster where the operator runs.
#
#   demo/live-demo.sh [--agent FILE] [--feature NAME] [--endpoint URL ...]
#
# Options:
#   --agent FILE      the SecurityAgent (default deploy/samples/securityagent_full.yaml)
#   --feature NAME    the feature to toggle off and on (default tetragon; its
#                     DaemonSet carries the same name)
#   --override TOOL   the override to change: its DaemonSet rolls (default falco)
#   --endpoint URL    Elasticsearch (repeatable), to show the CTEM report;
#                     ES_USERNAME / ES_PASSWORD from the environment
#   --ca-file FILE    PEM of the CA of Elasticsearch's certificate
#   --keep            leave the agent in place (default: delete it at the end)
#
# Environment: KUBECONFIG as for kubectl; KUBECTL and SECOP name the
# binaries (default: kubectl and secop on PATH).
set -euo pipefail

KUBECTL=${KUBECTL:-kubectl}
SECOP=${SECOP:-secop}
here=$(cd "$(dirname "$0")/.." && pwd)
agent_file="$here/deploy/samples/securityagent_full.yaml"
feature=tetragon
override=falco
keep=false
connection=()

while [ $# -gt 0 ]; do
  case "$1" in
    --agent) agent_file=$2; shift 2 ;;
    --feature) feature=$2; shift 2 ;;
    --override) override=$2; shift 2 ;;
    --endpoint|--ca-file) connection+=("$1" "$2"); shift 2 ;;
    --keep) keep=true; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "live-demo: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

k() { "$KUBECTL" "$@"; }
step() { printf '\n== %s\n' "$*"; }

namespace=$(k create --dry-run=client -o jsonpath='{.metadata.namespace}' -f "$agent_file")
name=$(k create --dry-run=client -o jsonpath='{.metadata.name}' -f "$agent_file")
namespace=${namespace:-default}
kn() { k -n "$namespace" "$@"; }

# wait_until: retry a command for up to $1 seconds.
wait_until() {
  local seconds=$1; shift
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      echo "live-demo: timed out after ${seconds}s waiting for: $*" >&2
      return 1
    fi
    sleep 2
  done
}

step "1. apply the SecurityAgent $namespace/$name"
k create namespace "$namespace" --dry-run=client -o yaml | k apply -f - >/dev/null
k apply --server-side --field-manager=live-demo -f "$agent_file"
kn wait --for=condition=Ready "secagent/$name" --timeout=300s
kn get secagent "$name"

step "2. what it deployed"
wait_until 300 kn rollout status "daemonset/$feature" --timeout=5s
kn get daemonsets,deployments,cronjobs
kn get pods -o wide

step "3. $feature off: its DaemonSet goes"
index=$(kn get secagent "$name" -o jsonpath='{.spec.features[*].name}' | tr ' ' '\n' | grep -nx "$feature" | cut -d: -f1)
if [ -z "$index" ]; then
  echo "live-demo: $agent_file has no feature named $feature (--feature)" >&2
  exit 2
fi
path="/spec/features/$((index - 1))/enabled"
kn patch secagent "$name" --type json -p "[{\"op\":\"add\",\"path\":\"$path\",\"value\":false}]"
kn wait --for=delete "daemonset/$feature" --timeout=120s
kn get daemonsets

step "4. $feature on again: it comes back"
kn patch secagent "$name" --type json -p "[{\"op\":\"add\",\"path\":\"$path\",\"value\":true}]"
wait_until 120 kn get "daemonset/$feature"
kn rollout status "daemonset/$feature" --timeout=180s
kn get daemonsets

step "5. an override changed: $override rolls out"
before=$(kn get "daemonset/$override" -o jsonpath='{.metadata.generation}')
kn patch secagent "$name" --type merge -p "{\"spec\":{\"override\":{\"$override\":{\"env\":[{\"name\":\"SECOP_DEMO\",\"value\":\"$(date +%s)\"}]}}}}"
generation_changed() { [ "$(kn get "daemonset/$override" -o jsonpath='{.metadata.generation}')" != "$before" ]; }
wait_until 60 generation_changed
kn rollout status "daemonset/$override" --timeout=180s
kn get "daemonset/$override" -o jsonpath='{.metadata.name}: generation {.metadata.generation}, {.status.updatedNumberScheduled} of {.status.desiredNumberScheduled} pods updated{"\n"}'

step "6. the agent's status conditions"
kn get secagent "$name" -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{"\n"}{end}'
kn get secagent "$name" -o jsonpath='features ready/enabled: {.status.summary}{"\n"}per feature: {.status.features}{"\n"}'

if [ ${#connection[@]} -gt 0 ]; then
  step "7. what landed in Elasticsearch: the CTEM report"
  "$SECOP" ctem-report "${connection[@]}" --sensor-namespace "$namespace" || true
fi

if [ "$keep" = false ]; then
  step "cleanup: deleting the agent (its objects go with it)"
  kn delete secagent "$name" --wait=true --timeout=180s
fi
