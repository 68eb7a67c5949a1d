#!/usr/bin/env bash
# Run the MITRE ATT&CK scenarios A–E of test/scenarios/README.md against a
# cluster where a SecurityAgent runs, then check with `secop ctem-report`
# that the detections landed in Elasticsearch. Exit 0 when no check fails.
#
#   test/run-ctem-scenarios.sh --endpoint https://es.example:9200 [options]
#
# Options:
#   --endpoint URL     Elasticsearch (repeatable); credentials from
#                      ES_USERNAME / ES_PASSWORD, CA from --ca-file
#   --ca-file FILE     PEM of the CA of Elasticsearch's certificate
#   --pods FILE        scenario workloads (default test/scenarios/pods.yaml)
#   --sensor-namespace NS   where the sensors run (default security-system)
#   --since DATE       only documents since DATE (Elasticsearch date math);
#                      default: all (osquery's snapshot is hourly)
#   --timeout SECONDS  how long to wait for the detections (default 300)
#   --keep             leave the scenario workloads running
#
# Environment: KUBECONFIG as for kubectl; KUBECTL and SECOP name the
# binaries (default: kubectl and secop on PATH).
#
# Scenario B needs a terminal (Falco's "Terminal shell in container" looks
# at proc.tty): without one on stdin, the exec runs under `script`, which
# gives it a pseudo-terminal.
set -euo pipefail

KUBECTL=${KUBECTL:-kubectl}
SECOP=${SECOP:-secop}
here=$(cd "$(dirname "$0")" && pwd)
pods="$here/scenarios/pods.yaml"
sensor_namespace=security-system
since=""
timeout=300
keep=false
connection=()

while [ $# -gt 0 ]; do
  case "$1" in
    --endpoint|--ca-file) connection+=("$1" "$2"); shift 2 ;;
    --pods) pods=$2; shift 2 ;;
    --sensor-namespace) sensor_namespace=$2; shift 2 ;;
    --since) since=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --keep) keep=true; shift ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    *) echo "run-ctem-scenarios: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ ${#connection[@]} -eq 0 ]; then
  echo "run-ctem-scenarios: --endpoint is required (the Elasticsearch the agent writes to)" >&2
  exit 2
fi

ns=ctem-test
k() { "$KUBECTL" "$@"; }
step() { printf '\n== %s\n' "$*"; }

cleanup() {
  if [ "$keep" = false ]; then
    step "cleanup: deleting the scenario workloads"
    k delete -f "$pods" --ignore-not-found --wait=false >/dev/null || true
  fi
}
trap cleanup EXIT

step "scenario workloads ($pods)"
k apply -f "$pods"
k wait --for=condition=Ready pod/ctem-testbox pod/attacker -n "$ns" --timeout=180s
k rollout status deployment/target-nginx -n "$ns" --timeout=180s

# exec_tty runs a command in a pod with a terminal, as `kubectl exec -it`.
exec_tty() {
  if [ -t 0 ]; then
    k exec -it "$@"
  else
    local cmd
    cmd=$(printf '%q ' "$KUBECTL" exec -it "$@")
    script -qec "$cmd" /dev/null </dev/null
  fi
}

step "A: CTEM Scope (osquery inventory): nothing to run; osquery's pack runs on its schedule"

step "B: T1059.004 Unix shell (with a terminal)"
exec_tty -n "$ns" ctem-testbox -- sh -c "whoami && id && uname -a"

step "C: T1552.001 service-account token read, then the Kubernetes API contacted"
k exec -n "$ns" ctem-testbox -- cat /var/run/secrets/kubernetes.io/serviceaccount/token >/dev/null
echo "token read"
# curl where the image has it (the seed plan's netshoot, test/scenarios/README.md), else busybox's wget;
# run as the exec'd command itself: a busybox shell runs applets without an
# exec, which Tetragon's process_exec would not show.
if k exec -n "$ns" attacker -- sh -c 'command -v curl' >/dev/null 2>&1; then
  client=(curl -sk https://kubernetes.default.svc -m 2)
else
  client=(wget -q -T 2 --no-check-certificate -O /dev/null https://kubernetes.default.svc)
fi
k exec -n "$ns" attacker -- "${client[@]}" \
  || echo "(the API answered with an error or not at all: the contact is what counts)"

step "D: T1611 container escape attempts (expected to fail: the pods are unprivileged)"
k exec -n "$ns" ctem-testbox -- ls -la /proc/1/ns/
k exec -n "$ns" ctem-testbox -- sh -c "mount -t proc proc /mnt 2>/dev/null || echo 'mount failed'"
k exec -n "$ns" attacker -- sh -c "nsenter --target 1 --mount -- /bin/sh -c 'echo escaped' 2>/dev/null || echo 'nsenter failed'"

step "E: T1053.003 cron persistence, then a dropped binary executed"
k exec -n "$ns" ctem-testbox -- sh -c \
  "mkdir -p /etc/cron.d && echo '* * * * * root /tmp/backdoor.sh' > /etc/cron.d/backdoor 2>/dev/null || echo 'blocked'"
k exec -n "$ns" ctem-testbox -- sh -c "cp /bin/busybox /tmp/backdoor && /tmp/backdoor id || true"

report=(ctem-report "${connection[@]}" --sensor-namespace "$sensor_namespace")
if [ -n "$since" ]; then report+=(--since "$since"); fi

step "waiting up to ${timeout}s for the detections in Elasticsearch"
deadline=$((SECONDS + timeout))
while :; do
  if "$SECOP" "${report[@]}" -o json >/dev/null 2>&1; then
    break
  fi
  if [ $SECONDS -ge $deadline ]; then
    break
  fi
  sleep 10
done

step "CTEM report"
"$SECOP" "${report[@]}"
