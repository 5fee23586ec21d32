# One image for every process of the system; the command picks which one:
#   docker run IMAGE order-service/src/main.ts
#   docker run IMAGE voucher-service/src/main.ts
#   docker run IMAGE order-service/src/relay-main.ts      (standalone relay)
# The code runs with tsx (no build step), and tsx is a dev dependency, so all
# dependencies are installed: `npm ci --omit=dev` would leave the image unable to start.
FROM node:26-bookworm-slim

WORKDIR /app

# Manifests first, so the dependency layer is rebuilt only when they change.
# npm ci needs every workspace's package.json to link the workspaces.
COPY package.json package-lock.json ./
COPY packages/platform/package.json packages/platform/
COPY packages/rules/package.json packages/rules/
COPY packages/sdk/package.json packages/sdk/
COPY packages/testkit/package.json packages/testkit/
COPY order-service/package.json order-service/
COPY voucher-service/package.json voucher-service/
COPY reconciler/package.json reconciler/
RUN npm ci --no-audit --no-fund && npm cache clean --force

COPY tsconfig.json ./
COPY proto proto
COPY packages packages
COPY order-service order-service
COPY voucher-service voucher-service
COPY reconciler reconciler

ENV NODE_ENV=production \
    LOG_FORMAT=json
RUN mkdir -p /data/reconciler && chown node:node /data/reconciler
USER node

ENTRYPOINT ["node", "--import", "tsx"]
CMD ["order-service/src/main.ts"]
