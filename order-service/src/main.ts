import { envReader } from "@shop/platform/config";
import { createLogger } from "@shop/platform/logger";
import { dieOnStartupError, exitOnSignals } from "@shop/platform/shutdown";
import { initTracing } from "@shop/platform/tracing";
import { readOrderServiceConfig } from "./config.js";
import { relayConfigFromEnv } from "./outbox/relay.js";
import { startOrderService } from "./service.js";

const logger = createLogger("order-service");

try {
  const r = envReader(process.env);
  const config = readOrderServiceConfig(r);
  const relay = config.relayEnabled ? relayConfigFromEnv(r) : false;
  r.finish();
  const tracing = await initTracing({ serviceName: "order-service", logger });
  const service = await startOrderService({ config, logger, relay });
  exitOnSignals(logger, async () => {
    await service.stop();
    await tracing.shutdown();
  });
} catch (err) {
  dieOnStartupError(logger, err);
}
