#!/usr/bin/env bash
# Fetches the pretrained vision weights that models/train/pretrained.py converts, from the
# npm registry (`npm pack`, no install), into models/train/cache/weights/ (gitignored).
#
#   models/train/fetch-weights.sh            # both packages
#   models/train/fetch-weights.sh facerec    # @vladmandic/face-api only
#   models/train/fetch-weights.sh mobilenetv2
#
# Result:
#   cache/weights/face-api-1.7.15/face_recognition_model-weights_manifest.json, .bin, LICENSE, package.json
#   cache/weights/nsfwjs-4.4.0/mobilenet_v2/model.json, group1-shard1of1.bin; LICENSE, package.json
# nsfwjs 4.x ships its models as UMD .min.js modules (model JSON object / base64 weight shard);
# they are turned back into a tfjs model.json + .bin with node.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="$HERE/cache/weights"
WHAT="${1:-all}"
mkdir -p "$OUT"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

FA_VER=1.7.15
NS_VER=4.4.0

pack() {  # pack <spec> <tarball-name> -> extracted to $TMP/<tarball-name>/package
  local spec="$1" name="$2"
  if [ ! -f "$OUT/$name.tgz" ]; then
    (cd "$TMP" && npm pack --silent "$spec" >/dev/null)
    mv "$TMP/$name.tgz" "$OUT/$name.tgz"
  fi
  mkdir -p "$TMP/$name"
  tar xzf "$OUT/$name.tgz" -C "$TMP/$name"
}

if [ "$WHAT" = all ] || [ "$WHAT" = facerec ]; then
  D="$OUT/face-api-$FA_VER"
  if [ ! -f "$D/face_recognition_model.bin" ]; then
    pack "@vladmandic/face-api@$FA_VER" "vladmandic-face-api-$FA_VER"
    P="$TMP/vladmandic-face-api-$FA_VER/package"
    mkdir -p "$D"
    cp "$P/model/face_recognition_model.bin" "$P/model/face_recognition_model-weights_manifest.json" \
       "$P/LICENSE" "$P/package.json" "$D/"
  fi
  echo "facerec: $D"
fi

if [ "$WHAT" = all ] || [ "$WHAT" = mobilenetv2 ]; then
  D="$OUT/nsfwjs-$NS_VER"
  if [ ! -f "$D/mobilenet_v2/group1-shard1of1.bin" ]; then
    pack "nsfwjs@$NS_VER" "nsfwjs-$NS_VER"
    P="$TMP/nsfwjs-$NS_VER/package"
    mkdir -p "$D/mobilenet_v2"
    cp "$P/LICENSE" "$P/package.json" "$D/"
    node -e '
      const fs = require("fs"), path = require("path");
      const [src, dst] = process.argv.slice(1);
      // UMD bundles: module.exports = the model JSON object / the base64 string of the shard
      const model = require(path.join(src, "model.min.js"));
      for (const g of model.weightsManifest) {
        for (const p of g.paths) {
          const b64 = require(path.join(src, p + ".min.js"));
          fs.writeFileSync(path.join(dst, p + ".bin"), Buffer.from(b64, "base64"));
        }
        g.paths = g.paths.map((p) => p + ".bin");
      }
      fs.writeFileSync(path.join(dst, "model.json"), JSON.stringify(model));
    ' "$P/dist/models/mobilenet_v2" "$D/mobilenet_v2"
  fi
  echo "mobilenetv2: $D/mobilenet_v2"
fi
ls -la "$OUT"
