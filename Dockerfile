# nosepaw: one image, stateless; configure with the environment (see README).
# The serving image (the default target, the last stage): the first stage
# compiles the server and builds the capture app with the dev dependencies,
# the last holds only what runs. The learning image is the `learn` target
# (docker build --target learn -t nosepaw-learn:<tag> .), the image of the
# registry:learn CronJob (k8s/learn-cronjob.yaml, docs/learning.md).

FROM node:24-bookworm-slim AS build
WORKDIR /src
# A C compiler and Debian's libjpeg headers for the libjpeg decoder addon
# (server/image/jpeg-decode.c): the library Debian's Pillow links, so the
# serving stage installs its runtime package.
RUN apt-get update \
  && apt-get install -y --no-install-recommends gcc libc6-dev libjpeg62-turbo-dev \
  && rm -rf /var/lib/apt/lists/*
# onnxruntime-node ships its CPU library; its install step would only try to fetch GPU files.
ENV ONNXRUNTIME_NODE_INSTALL=skip
COPY package.json package-lock.json .npmrc ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json vite.config.ts ./
COPY gen ./gen
COPY shared ./shared
COPY server ./server
COPY client ./client
COPY scripts/build-client-if-needed.mjs scripts/build-native-if-needed.mjs ./scripts/
RUN npm run build && npm run build:client && npm run build:native

# The learning loop (npm run registry:learn): the server's sources run with
# tsx (a dev dependency) as in development, and the model tooling under
# models/train/ runs on Debian 12's own python3 packages, from apt only (the
# modules models/train imports; test/deploy.test.ts checks the list). The
# bundled model, card and checkpoint are the loop's starting point until a
# release is promoted. BuildKit builds this stage only when it is the target.
FROM node:24-bookworm-slim AS learn
WORKDIR /app
ENV ONNXRUNTIME_NODE_INSTALL=skip \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib
RUN apt-get update \
  && apt-get install -y --no-install-recommends \
    python3 python3-numpy python3-scipy python3-opencv python3-pil \
    python3-torch python3-torchvision python3-onnx python3-matplotlib \
  && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json .npmrc ./
RUN npm ci --no-audit --no-fund && npm cache clean --force
COPY tsconfig.json ./
COPY gen ./gen
COPY shared ./shared
COPY server ./server
COPY models/train ./models/train
COPY models/nose-embedder.onnx models/nose-embedder.json models/nose-embedder.pt ./models/
USER node

FROM node:24-bookworm-slim
WORKDIR /app
ENV ONNXRUNTIME_NODE_INSTALL=skip \
    NODE_ENV=production
COPY package.json package-lock.json .npmrc ./
RUN apt-get update \
  && apt-get install -y --no-install-recommends libjpeg62-turbo \
  && rm -rf /var/lib/apt/lists/*
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /src/build ./build
COPY --from=build /src/dist/client ./dist/client
COPY --from=build /src/dist/native ./dist/native
COPY models/nose-embedder.onnx models/nose-embedder.json ./models/

RUN mkdir -p /data && chown node:node /data
USER node
# glibc gives every thread that allocates its own malloc arena; libvips and
# the worker threads then spread decoded photos over many arenas that are
# never returned, and RSS creeps up. Two arenas keep it flat (hostile-input
# test: +0.5% over ten passes of the corpus with it, +6.6% without).
ENV GRPC_PORT=50052 \
    DATA_DIR=/data \
    MALLOC_ARENA_MAX=2
EXPOSE 50052

# The same question Kubernetes' gRPC probes ask (grpc.health.v1 Check for ""),
# answered SERVING only once the model is loaded and until shutdown begins.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "build/server/tools/healthcheck.js"]

# node is the main process, so SIGTERM reaches the server and graceful
# shutdown (NOT_SERVING, drain, exit) runs.
CMD ["node", "build/server/main.js"]
