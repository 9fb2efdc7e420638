#!/usr/bin/env bash
# Build the image from the unmodified Dockerfile and check it as a user would (issue 21), on a machine
# with a Docker engine and, failing a registry, Debian's mirror:
#   1. start dockerd if none answers;
#   2. the CUDA base (nvidia/cuda), or when it cannot be pulled a Debian bookworm base made with
#      debootstrap and `docker import` (no GPU is used: the tiny preset runs on the CPU);
#   3. build with build arguments only; print the build time and the image size;
#   4. `docker run ... IMAGE up`, make a video through the published port, download it by the URL the
#      job reports, and check it is an MP4 of the frames asked for;
#   5. a worker container (`IMAGE worker`) must turn healthy by the image's own health check;
#   6. rebuild after a one-line code change (in a copy of the context) and print the new layers' size:
#      at most 50 MB, or the check fails.
# Not part of .ci/run: it takes about ten minutes (longer when the first build downloads torch).
#
# Environment (all optional):
#   IMAGE            tag to build (show1:check)
#   CUDA_IMAGE       base image to try first (the Dockerfile's default)
#   TORCH_CUDA       cu130 (default), cu126 or cpu: the build fails unless torch is built for it
#   TORCH_INDEX_URL  where torch comes from (default: PyPI, which serves torch 2.13.0 for CUDA 13.0;
#                    the Dockerfile's own default is PyTorch's index, unreachable on some machines)
#   PIP_CERT         CA bundle for pip inside the build, passed as a BuildKit secret (never in a layer);
#                    default: pip's configured cert, else /etc/ssl/certs/ca-certificates.crt
#   PORT             host port `up` is published on (18001)
#   MAX_NEW_LAYERS_MB  the limit of step 6 (50)
set -euo pipefail

REPO=${REPO:-$(cd "$(dirname "$0")/.." && pwd)}
IMAGE=${IMAGE:-show1:check}
CUDA_IMAGE=${CUDA_IMAGE:-nvidia/cuda:13.0.2-base-ubuntu24.04}
DEBIAN_BASE=${DEBIAN_BASE:-show1-base:bookworm}
TORCH_CUDA=${TORCH_CUDA:-cu130}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://pypi.org/simple}
PORT=${PORT:-18001}
MAX_NEW_LAYERS_MB=${MAX_NEW_LAYERS_MB:-50}
WORK=$(mktemp -d /tmp/show1-check-image.XXXXXX)
chmod 755 "$WORK"  # the image runs as uid 10001 and reads the downloads from here
CONTAINERS=()

say() { printf '\n== %s\n' "$*"; }
fail() { printf '\nFAIL: %s\n' "$*" >&2; exit 1; }
cleanup() {
    for container in "${CONTAINERS[@]}"; do docker rm -f "$container" >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# 1. The engine.
say "docker engine"
if ! docker info >/dev/null 2>&1; then
    command -v dockerd >/dev/null || fail "no Docker engine: install one (Debian: apt-get install docker.io)"
    echo "starting dockerd (log: /tmp/show1-dockerd.log)"
    nohup dockerd >/tmp/show1-dockerd.log 2>&1 &
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || fail "dockerd did not start; see /tmp/show1-dockerd.log"
fi
docker version --format 'engine {{.Server.Version}}, client {{.Client.Version}}'

# A client that builds with BuildKit (the Dockerfile mounts a secret and the wheel): buildx, or a client
# older than 23 with DOCKER_BUILDKIT=1 (newer ones hand `build` to buildx and fall back to the legacy
# builder without it).
BUILD=()
for client in docker /usr/bin/docker; do
    command -v "$client" >/dev/null || continue
    if "$client" buildx version >/dev/null 2>&1; then
        BUILD=("$client" buildx build --load); break
    fi
    major=$("$client" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1 || echo 99)
    if [ "${major:-99}" -lt 23 ] 2>/dev/null; then
        BUILD=(env DOCKER_BUILDKIT=1 "$client" build); break
    fi
done
[ ${#BUILD[@]} -gt 0 ] || fail "no docker client that builds with BuildKit (install docker-buildx)"
echo "building with: ${BUILD[*]}"

# 2. The base.
say "base image"
if timeout 120 docker pull -q "$CUDA_IMAGE" >/dev/null 2>&1; then
    BASE=$CUDA_IMAGE
    echo "pulled $BASE"
elif docker image inspect "$DEBIAN_BASE" >/dev/null 2>&1; then
    BASE=$DEBIAN_BASE
    echo "$CUDA_IMAGE cannot be pulled; using the Debian base made earlier: $BASE"
else
    echo "$CUDA_IMAGE cannot be pulled; making a Debian bookworm base with debootstrap"
    command -v debootstrap >/dev/null || fail "no debootstrap (apt-get install debootstrap)"
    mirror=$(grep -rhoE '(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
        | grep -oE 'https?://[^ ]+' | head -1)
    debootstrap --variant=minbase bookworm "$WORK/rootfs" "${mirror:-http://deb.debian.org/debian}" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; fail "debootstrap failed"; }
    tar -C "$WORK/rootfs" -c . | docker import - "$DEBIAN_BASE" >/dev/null
    rm -rf "$WORK/rootfs"
    BASE=$DEBIAN_BASE
    echo "made $BASE"
fi

# pip's CA bundle, as a build secret.
if [ -z "${PIP_CERT:-}" ]; then
    PIP_CERT=$(pip config get global.cert 2>/dev/null || true)
    [ -n "$PIP_CERT" ] || PIP_CERT=/etc/ssl/certs/ca-certificates.crt
fi
SECRET=()
[ -s "$PIP_CERT" ] && SECRET=(--secret "id=pip_cert,src=$PIP_CERT")

build() {  # build CONTEXT TAG
    "${BUILD[@]}" --progress=plain \
        --build-arg "CUDA_IMAGE=$BASE" \
        --build-arg "TORCH_CUDA=$TORCH_CUDA" \
        --build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL" \
        "${SECRET[@]}" -t "$2" "$1"
}

# 3. The build, from the repository as it is.
say "build $IMAGE (CUDA_IMAGE=$BASE TORCH_CUDA=$TORCH_CUDA TORCH_INDEX_URL=$TORCH_INDEX_URL)"
started=$(date +%s)
build "$REPO" "$IMAGE" >"$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; fail "the build failed"; }
grep -E 'built for|as asked' "$WORK/build.log" | sed 's/^#[0-9]* [0-9.]* //' | sort -u || true
echo "build time: $(( $(date +%s) - started )) s"
echo "image size: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB (%d bytes)", $1/1e9, $1}')"
echo "runs as uid: $(docker image inspect -f '{{.Config.User}}' "$IMAGE")"
docker history --format '{{.Size}}\t{{.CreatedBy}}' "$IMAGE" | grep -v '^0B' | cut -c1-110

# 4. `up`, a video through the published port, downloaded by the URL the job reports.
say "docker run -p 127.0.0.1:$PORT:8000 $IMAGE up --host 0.0.0.0"
UP=$(docker run -d -p "127.0.0.1:$PORT:8000" "$IMAGE" up --host 0.0.0.0)
CONTAINERS+=("$UP")
API="http://127.0.0.1:$PORT"
for _ in $(seq 180); do curl -fsS "$API/healthz" >/dev/null 2>&1 && break; sleep 1; done
curl -fsS "$API/healthz" >/dev/null || { docker logs "$UP" 2>&1 | tail -30; fail "the API never answered on $API"; }
started=$(date +%s)
job=$(curl -fsS -X POST "$API/v1/videos" -H 'Content-Type: application/json' \
    -d '{"prompt": "A panda taking a selfie", "seed": 7, "num_keyframes": 2}')
id=$(printf '%s' "$job" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
echo "job $id queued"
for _ in $(seq 300); do
    job=$(curl -fsS "$API/v1/videos/$id")
    status=$(printf '%s' "$job" | python3 -c 'import json, sys; print(json.load(sys.stdin)["status"])')
    case $status in succeeded|failed|canceled) break ;; esac
    sleep 1
done
[ "$status" = succeeded ] || { printf '%s\n' "$job"; docker logs "$UP" 2>&1 | tail -30; fail "job $id $status"; }
echo "job $id succeeded in $(( $(date +%s) - started )) s"
read -r result_url preview_url frames < <(printf '%s' "$job" | python3 -c '
import json, sys
job = json.load(sys.stdin)
print(job["result"]["url"], job["preview_url"], job["result"]["frames"])')
echo "result.url:  $result_url"
echo "preview_url: $preview_url"
case $result_url in "$API"/*) ;; *) fail "result.url is not under $API" ;; esac
case $preview_url in "$API"/*) ;; *) fail "preview_url is not under $API" ;; esac
curl -fsS -o "$WORK/video.mp4" "$result_url"
curl -fsS -o "$WORK/preview.png" "$preview_url"
# Decoded by the image's own PyAV (the host may have none).
docker run --rm -i --entrypoint python -v "$WORK:/check:ro" "$IMAGE" - "$frames" <<'PY'
import sys

import av

frames = int(sys.argv[1])
data = open("/check/video.mp4", "rb").read()
assert data[4:8] == b"ftyp", "not an MP4"
with av.open("/check/video.mp4") as container:
    stream = container.streams.video[0]
    decoded = list(container.decode(video=0))
assert len(decoded) == frames, (len(decoded), frames)
print(f"video: {len(data)} bytes, {stream.codec_context.name}, {len(decoded)} frames of "
      f"{decoded[0].width}x{decoded[0].height} decoded, as the job reported")
png = open("/check/preview.png", "rb").read()
assert png[:8] == b"\x89PNG\r\n\x1a\n", "the preview is not a PNG"
print(f"preview: {len(png)} bytes, a PNG")
PY
up_health=""
for _ in $(seq 60); do
    up_health=$(docker inspect -f '{{.State.Health.Status}}' "$UP")
    [ "$up_health" = healthy ] && break
    sleep 2
done
echo "health of the up container: $up_health"
[ "$up_health" = healthy ] || fail "the up container is $up_health"

# 5. A worker container, judged by the image's health check (its alive file, not HTTP). It shares the
# up container's network, so it reaches the embedded Redis there.
say "docker run $IMAGE worker (health check)"
redis_url=$(docker logs "$UP" 2>&1 | grep -oE 'redis://127\.0\.0\.1:[0-9]+/0' | head -1)
[ -n "$redis_url" ] || fail "the up container's log names no embedded Redis"
WORKER=$(docker run -d --network "container:$UP" -e "SHOW1_REDIS_URL=$redis_url" -e SHOW1_MODELS_DIR= \
    "$IMAGE" worker)
CONTAINERS+=("$WORKER")
worker_health=""
for _ in $(seq 90); do
    worker_health=$(docker inspect -f '{{.State.Health.Status}}' "$WORKER")
    [ "$worker_health" = healthy ] && break
    [ "$(docker inspect -f '{{.State.Running}}' "$WORKER")" = true ] || break
    sleep 2
done
docker inspect -f '{{range .State.Health.Log}}{{.ExitCode}} {{.Output}}{{end}}' "$WORKER" | tail -2
echo "health of the worker container: $worker_health"
[ "$worker_health" = healthy ] || { docker logs "$WORKER" 2>&1 | tail -20; fail "the worker is $worker_health"; }

# 6. A one-line code change: only the project's layer is new.
say "rebuild after a one-line change to app/__init__.py"
mkdir "$WORK/context"
tar -C "$REPO" --exclude=./.git --exclude=./.venv --exclude=./var --exclude='*/__pycache__' -cf - . \
    | tar -C "$WORK/context" -xf -
echo "# check-image.sh: a one-line change" >>"$WORK/context/app/__init__.py"
started=$(date +%s)
build "$WORK/context" "$IMAGE-changed" >"$WORK/build2.log" 2>&1 || { tail -40 "$WORK/build2.log"; fail "the rebuild failed"; }
echo "rebuild time: $(( $(date +%s) - started )) s"
python3 - "$IMAGE" "$IMAGE-changed" "$MAX_NEW_LAYERS_MB" <<'PY'
import json, subprocess, sys
old, new, limit_mb = sys.argv[1], sys.argv[2], float(sys.argv[3])
def layers(image):
    return json.loads(subprocess.check_output(["docker", "image", "inspect", "-f", "{{json .RootFS.Layers}}", image]))
before, after = layers(old), layers(new)
shared = 0
while shared < min(len(before), len(after)) and before[shared] == after[shared]:
    shared += 1
print(f"layers: {len(after)}, shared with the previous build: {shared}, new: {len(after) - shared}")
# `docker system df -v`: an image's unique size is the size of the layers no other image has.
table = subprocess.check_output(["docker", "system", "df", "-v", "--format", "{{json .Images}}"], text=True)
unique = None
for image in json.loads(table):
    if f"{image['Repository']}:{image['Tag']}" == new:
        unique = image["UniqueSize"]
print(f"new layers' size (unique to {new}): {unique}")
history = subprocess.check_output(["docker", "history", "--format", "{{.Size}}\t{{.CreatedBy}}", new], text=True)
print("top of the history:\n" + "\n".join(line[:110] for line in history.splitlines()[:12] if not line.startswith("0B")))
units = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}
number = unique.rstrip("kKMGB")
size = float(number) * units[unique[len(number):]]
verdict = "PASS" if size <= limit_mb * 1e6 else "FAIL"
print(f"{verdict}: {size / 1e6:.2f} MB of new layers (limit {limit_mb:g} MB)")
sys.exit(verdict != "PASS")
PY
docker rmi "$IMAGE-changed" >/dev/null
say "all checks passed ($IMAGE kept)"
