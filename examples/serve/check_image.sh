#!/usr/bin/env bash
# Builds examples/serve/Dockerfile and checks the image as a deployment would use it:
#   /health 200 from the host through the published port; /embed bit-identical to the in-process
#   Elmo (this checkout's, the shipped default package); no torch in the image; PID 1 not root;
#   ELMO_ONNX_OFFLINE=1 and a container with no network at all turns healthy; docker's own
#   HEALTHCHECK turns healthy (and its command fails where nothing listens); docker stop (SIGTERM)
#   answers the requests in flight and exits 0 within the graceful timeout.
# Prints the image size, the build time and the time to healthy. Not part of the test suite: it
# needs a docker daemon and takes about a minute (docs/serve.md, "In a container").
#
# Usage, from anywhere:   examples/serve/check_image.sh [--local-base]
#   --local-base   instead of pulling BASE, build a base from this machine's Debian apt mirror
#                  (mmdebstrap: the release in /etc/os-release, python3 + venv, this machine's
#                  extra CAs from /usr/local/share/ca-certificates), once: it stays as the image
#                  elmo-base:CODENAME-python3. For machines that cannot reach Docker Hub.
# Environment: BASE (default python:3.12-slim), IMAGE (default elmo-serve:check), PORT (host port,
#   default 18080), PYTHON (default python3; needs numpy, onnxruntime and tokenizers for the
#   in-process vectors), DOCKER (default docker).
# Exit status: 0 all checks passed, 1 a check failed (one line says which), 77 skipped (no
#   docker daemon, or no base image), with a one-line reason.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BASE=${BASE:-python:3.12-slim}
IMAGE=${IMAGE:-elmo-serve:check}
PORT=${PORT:-18080}
PYTHON=${PYTHON:-python3}
DOCKER=${DOCKER:-docker}
NAME=elmo-serve-check-$$
LOCAL_BASE=0
[ "${1:-}" = --local-base ] && LOCAL_BASE=1

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }
now() { date +%s.%N; }
since() { "$PYTHON" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }
cleanup() { "$DOCKER" rm -f "$NAME" "$NAME-offline" >/dev/null 2>&1 || true; }
trap cleanup EXIT

command -v "$DOCKER" >/dev/null || skip "no docker command ($DOCKER)"
"$DOCKER" info >/dev/null 2>&1 || skip "no docker daemon answers ($DOCKER info failed)"

local_base() {
    # The release this machine's apt sources serve, so that its mirror has every package.
    local codename log
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    BASE=elmo-base:$codename-python3
    "$DOCKER" image inspect "$BASE" >/dev/null 2>&1 && return
    command -v mmdebstrap >/dev/null || skip "--local-base needs mmdebstrap (apt-get install mmdebstrap)"
    local tar cas=(/usr/local/share/ca-certificates/*.crt)
    tar=$(mktemp --suffix=.tar)
    log=$(mktemp --suffix=.log)
    local hooks=()
    # A proxy that re-signs TLS (PyPI through it) needs the build's pip to trust what this machine trusts.
    if [ -e "${cas[0]}" ]; then
        hooks=(--customize-hook="copy-in ${cas[*]} /usr/local/share/ca-certificates/"
               --customize-hook='chroot "$1" update-ca-certificates')
    fi
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        "${hooks[@]}" "$codename" "$tar" >"$log" 2>&1 || skip "mmdebstrap $codename failed: $(tail -1 "$log")"
    "$DOCKER" import --change 'CMD ["/bin/bash"]' "$tar" "$BASE" >/dev/null
    echo "built the base $BASE with mmdebstrap in $(since "$t") s"
    rm -f "$tar" "$log"
}

t=$(now)
if [ "$LOCAL_BASE" = 1 ]; then
    local_base
elif ! "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
    "$DOCKER" pull -q "$BASE" >/dev/null 2>&1 || skip "cannot pull $BASE (offline? try --local-base)"
fi

t=$(now)
"$DOCKER" build -q -f "$ROOT/examples/serve/Dockerfile" --build-arg "BASE=$BASE" -t "$IMAGE" "$ROOT" >/dev/null \
    || fail "docker build failed (run it without -q to see why)"
build_s=$(since "$t")
size=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE")
echo "built $IMAGE on $BASE in ${build_s} s; image $((size / 1000000)) MB"

"$DOCKER" run --rm --network none --entrypoint python "$IMAGE" -c \
    "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is not None)" \
    || fail "torch is installed in the image"

t=$(now)
"$DOCKER" run -d --name "$NAME" -p "127.0.0.1:$PORT:8080" "$IMAGE" >/dev/null
code=000
for _ in $(seq 1 600); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health" || true)
    [ "$code" = 200 ] && break
    sleep 0.1
done
[ "$code" = 200 ] || fail "/health answered $code after 60 s; docker logs $NAME says: $("$DOCKER" logs "$NAME" 2>&1 | tail -1)"
echo "/health 200 after $(since "$t") s (from docker run)"

uid=$("$DOCKER" exec "$NAME" awk '/^Uid:/ {print $2}' /proc/1/status)
[ "$uid" != 0 ] || fail "the server (PID 1) runs as root"
offline=$("$DOCKER" exec "$NAME" printenv ELMO_ONNX_OFFLINE || true)
[ "$offline" = 1 ] || fail "ELMO_ONNX_OFFLINE is '$offline' in the container, not 1"
echo "PID 1 runs as uid $uid; ELMO_ONNX_OFFLINE=$offline"

# The served vectors against this checkout's Elmo in-process, bit for bit: the server writes each
# float32 in its shortest form that reads back as the same float32, so no tolerance.
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" - "$PORT" <<'PY' || fail "/embed differs from the in-process Elmo"
import json
import sys
import urllib.request

import numpy as np

from elmo_runtime import Elmo

sentences = ["The cat sat on the mat.", "Hi!", "Zürich's naïve café, 3.14 km away – isn't it?"]
body = json.dumps({"inputs": sentences, "normalize": False}).encode()
request = urllib.request.Request(
    f"http://127.0.0.1:{sys.argv[1]}/embed", data=body, headers={"Content-Type": "application/json"}
)
served = json.load(urllib.request.urlopen(request, timeout=30))
local = Elmo().embed(sentences, layers="average", pool="mean")
for sentence, s, v in zip(sentences, served, local, strict=True):
    s = np.asarray(s, dtype=np.float32)
    if s.shape != v.shape or not np.array_equal(s.view(np.uint32), v.view(np.uint32)):
        sys.exit(f"{sentence!r}: served and in-process vectors differ (max |diff| {np.abs(s - v).max()})")
print(f"/embed: {len(sentences)} vectors of {len(local[0])} floats, bit-identical to Elmo().embed in-process")
PY

health_test=$("$DOCKER" inspect -f '{{json .Config.Healthcheck.Test}}' "$IMAGE")
health_cmd=$("$PYTHON" -c "import json, sys; t = json.loads(sys.argv[1]); assert t[0] == 'CMD-SHELL'; print(t[1])" "$health_test")
status=
for _ in $(seq 1 90); do
    status=$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$NAME")
    [ "$status" = healthy ] && break
    sleep 0.5
done
[ "$status" = healthy ] || fail "docker's HEALTHCHECK says '$status' after 45 s"
echo "docker HEALTHCHECK: healthy after $(since "$t") s (its first check runs --interval after the start)"
if "$DOCKER" run --rm --network none --entrypoint sh "$IMAGE" -c "$health_cmd" >/dev/null 2>&1; then
    fail "the HEALTHCHECK command passes where no server listens"
fi

# Offline for real: no network at all, and the package still verifies and serves.
"$DOCKER" run -d --name "$NAME-offline" --network none "$IMAGE" >/dev/null
for _ in $(seq 1 60); do
    "$DOCKER" exec "$NAME-offline" sh -c "$health_cmd" >/dev/null 2>&1 && break
    sleep 1
done
"$DOCKER" exec "$NAME-offline" sh -c "$health_cmd" >/dev/null 2>&1 || fail "no /health 200 with --network none"
"$DOCKER" rm -f "$NAME-offline" >/dev/null
echo "with --network none: /health 200 (HEALTHCHECK command run with docker exec)"

# SIGTERM with requests in flight: every one answered, then exit 0 within the graceful timeout
# (30 s; docker stop -t gives it that long before SIGKILL).
# Each 0.5 to 1.5 s of work on 2 shared cores (32 inputs of 200 distinct words: no token-cache hits).
pids=()
for r in 1 2 3 4; do
    "$PYTHON" -c "import json, sys; r = sys.argv[1]
print(json.dumps({'inputs': [' '.join(f'w{r}x{i}x{j}' for j in range(200)) for i in range(32)]}))" "$r" \
        >"/tmp/$NAME.json.$r"
done
for r in 1 2 3 4; do
    curl -s -o /dev/null -w '%{http_code}\n' -H 'Content-Type: application/json' -d "@/tmp/$NAME.json.$r" \
        "http://127.0.0.1:$PORT/embed" >"/tmp/$NAME.code.$r" &
    pids+=($!)
done
sleep 0.3
t=$(now)
"$DOCKER" stop -t 35 "$NAME" >/dev/null
stop_s=$(since "$t")
wait "${pids[@]}" || true
answers=$(cat /tmp/"$NAME".code.* | tr '\n' ' ')
rm -f /tmp/"$NAME".*
exit_code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$NAME")
[ "$exit_code" = 0 ] || fail "docker stop: the server exited $exit_code"
[ "$answers" = "200 200 200 200 " ] || fail "requests in flight at docker stop answered: $answers"
"$DOCKER" logs "$NAME" 2>&1 | tail -1 | grep -q '"message": "stopped (SIGTERM)"' || fail "no JSON 'stopped (SIGTERM)' log line"
late=$("$DOCKER" logs "$NAME" 2>&1 | sed -n '/"Shutting down"/,$p' | grep -c '"path": "/embed", "status": 200' || true)
[ "$late" -ge 1 ] || fail "no request was still in flight at docker stop: give each more work"
echo "docker stop: exit 0 after ${stop_s} s, once the requests in flight were answered (4 of 4 answered 200, $late of them after SIGTERM)"
echo "OK: $IMAGE (base $BASE): all checks passed"
