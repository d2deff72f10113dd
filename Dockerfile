# nosepaw: one image, stateless; configure with the environment (see README).
FROM node:20-bookworm-slim

WORKDIR /app
# onnxruntime-node ships its CPU library; its install step would only try to fetch GPU files.
ENV ONNXRUNTIME_NODE_INSTALL=skip \
    NODE_ENV=production

COPY package.json package-lock.json .npmrc ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

COPY tsconfig.json ./
COPY proto ./proto
COPY gen ./gen
COPY shared ./shared
COPY server ./server
COPY models/nose-embedder.onnx models/nose-embedder.json ./models/

RUN mkdir -p /data && chown node:node /data
USER node
ENV GRPC_PORT=50052 \
    DATA_DIR=/data
EXPOSE 50052

# node itself is PID 1's child-free main process, so SIGTERM reaches the server
# and graceful shutdown (NOT_SERVING, drain, exit) runs.
CMD ["node", "--import", "tsx", "server/main.ts"]
