#!/usr/bin/env bash
# Installs the Debian python3 packages the model pipeline (models/train) needs,
# and grpcio + protobuf for the old Python server that `npm run bench` compares against.
# Idempotent: runs apt-get only for packages that are missing, and `apt-get update` only then.
set -euo pipefail
PKGS=(python3-torch python3-torchvision python3-onnx python3-opencv python3-numpy python3-pil python3-scipy python3-matplotlib python3-grpcio python3-protobuf)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "train deps: all installed"
else
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "train deps: installing ${missing[*]}"
  $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi
/usr/bin/python3 -c "import torch, torchvision, onnx, cv2, numpy, PIL, scipy, matplotlib, grpc; print('torch', torch.__version__, 'onnx', onnx.__version__)"
