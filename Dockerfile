# One image for every process of the system; the command picks which one:
#   docker run IMAGE order-service/dist/main.js
#   docker run IMAGE voucher-service/dist/main.js
#   docker run IMAGE payment-service/dist/main.js
#   docker run IMAGE delivery-service/dist/main.js
#   docker run IMAGE order-service/dist/relay-main.js     (standalone relay; payment-service/ and delivery-service/ have theirs)
#   docker run IMAGE reconciler/dist/main.js [--once]
# Two stages: the build stage installs every dependency and compiles the workspaces with tsc (npm run build);
# the runtime stage holds production dependencies only (no tsx, TypeScript, test tools or test kit), the
# compiled dist/ folders and the SQL migrations, and runs them with plain node as a non-root user.
# test/build.test.ts assembles the runtime stage's files as this file lists them and starts the services from it.

FROM node:26-bookworm-slim AS build
WORKDIR /app
# Manifests first, so the dependency layer is rebuilt only when they change.
# npm ci needs every workspace's package.json to link the workspaces.
COPY package.json package-lock.json ./
COPY packages/platform/package.json packages/platform/
COPY packages/engine/package.json packages/engine/
COPY packages/rules/package.json packages/rules/
COPY packages/sdk/package.json packages/sdk/
COPY packages/testkit/package.json packages/testkit/
COPY order-service/package.json order-service/
COPY voucher-service/package.json voucher-service/
COPY payment-service/package.json payment-service/
COPY delivery-service/package.json delivery-service/
COPY reconciler/package.json reconciler/
COPY gateway/package.json gateway/
RUN npm ci --no-audit --no-fund
COPY tsconfig.base.json tsconfig.build.json ./
COPY packages packages
COPY order-service order-service
COPY voucher-service voucher-service
COPY payment-service payment-service
COPY delivery-service delivery-service
COPY reconciler reconciler
RUN npm run build

FROM node:26-bookworm-slim AS runtime
WORKDIR /app
ENV NODE_ENV=production \
    LOG_FORMAT=json
# The test kit's manifest is left out: npm ci then links only the workspaces production runs.
COPY package.json package-lock.json ./
COPY packages/platform/package.json packages/platform/
COPY packages/engine/package.json packages/engine/
COPY packages/rules/package.json packages/rules/
COPY packages/sdk/package.json packages/sdk/
COPY order-service/package.json order-service/
COPY voucher-service/package.json voucher-service/
COPY payment-service/package.json payment-service/
COPY delivery-service/package.json delivery-service/
COPY reconciler/package.json reconciler/
COPY gateway/package.json gateway/
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/packages/platform/dist packages/platform/dist
COPY --from=build /app/packages/engine/dist packages/engine/dist
COPY --from=build /app/packages/rules/dist packages/rules/dist
COPY --from=build /app/packages/sdk/dist packages/sdk/dist
COPY --from=build /app/order-service/dist order-service/dist
COPY --from=build /app/voucher-service/dist voucher-service/dist
COPY --from=build /app/payment-service/dist payment-service/dist
COPY --from=build /app/delivery-service/dist delivery-service/dist
COPY --from=build /app/reconciler/dist reconciler/dist
# Read at start: each service migrates its own database from these.
COPY order-service/drizzle order-service/drizzle
COPY voucher-service/drizzle voucher-service/drizzle
COPY payment-service/drizzle payment-service/drizzle
COPY delivery-service/drizzle delivery-service/drizzle
# The code stays root's and read-only to the service; only the reconciler's state and reports are written.
RUN mkdir -p /data/reconciler && chown node:node /data/reconciler
USER node

ENTRYPOINT ["node"]
CMD ["order-service/dist/main.js"]
